package bench

import (
	"math/bits"
	"testing"
	"time"
)

// hist is a latency histogram with about 3% resolution: values below 64ns
// have a bucket each; above, every power of two is split into 32 buckets.
// Recording is a few instructions and never allocates, so that a sync
// scenario can time every call inside the measured run.
type hist [histBuckets]uint64

// histBuckets covers up to 2^40ns (18 minutes); longer waits land in the
// last bucket.
const histBuckets = 35*32 + 32

// bucketOf returns the bucket of v nanoseconds.
func bucketOf(v uint64) int {
	shift := bits.Len64(v) - 6
	if shift <= 0 {
		return int(v) // 0..63
	}
	return min(shift*32+int(v>>shift), histBuckets-1)
}

// bucketFloor returns the smallest value of bucket b.
func bucketFloor(b int) uint64 {
	if b < 64 {
		return uint64(b)
	}
	shift := b/32 - 1
	return uint64(b-shift*32) << shift
}

func (h *hist) add(d time.Duration) { h[bucketOf(uint64(max(d, 0)))]++ }

func (h *hist) reset() { *h = hist{} }

func (h *hist) merge(o *hist) {
	for i, c := range o {
		h[i] += c
	}
}

// quantile returns the q-quantile (0 < q <= 1) of the recorded values, as
// the middle of its bucket; 0 if nothing was recorded.
func (h *hist) quantile(q float64) time.Duration {
	var total uint64
	for _, c := range h {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5) // the rank-th smallest value, 1-based
	rank = min(max(rank, 1), total)
	var seen uint64
	for b, c := range h {
		seen += c
		if seen >= rank {
			lo := bucketFloor(b)
			hi := lo + 1
			if b+1 < histBuckets {
				hi = bucketFloor(b + 1)
			}
			return time.Duration(lo + (hi-lo-1)/2)
		}
	}
	panic("unreachable: rank <= total")
}

// latencies are the histograms of one run: one per publishing goroutine,
// allocated before the run so that recording allocates nothing.
type latencies struct{ h []*hist }

func newLatencies(goroutines int) *latencies {
	l := &latencies{h: make([]*hist, goroutines)}
	for i := range l.h {
		l.h[i] = new(hist)
	}
	return l
}

// of returns goroutine g's histogram.
func (l *latencies) of(g int) *hist { return l.h[g] }

func (l *latencies) reset() {
	for _, h := range l.h {
		h.reset()
	}
}

// merged returns all goroutines' values in one histogram.
func (l *latencies) merged() *hist {
	var m hist
	for _, h := range l.h {
		m.merge(h)
	}
	return &m
}

func TestHistBuckets(t *testing.T) {
	// Every value lands in the bucket whose range holds it, buckets
	// follow each other without gaps, and each is at most 1/32 of its
	// values wide.
	prev := -1
	for v := uint64(0); v < 1<<20; v++ {
		b := bucketOf(v)
		if b != prev && b != prev+1 {
			t.Fatalf("bucketOf(%d) = %d after %d: a gap", v, b, prev)
		}
		prev = b
		lo, hi := bucketFloor(b), bucketFloor(b+1)
		if v < lo || v >= hi {
			t.Fatalf("bucketOf(%d) = %d, which holds [%d, %d)", v, b, lo, hi)
		}
		if width := hi - lo; width > 1 && width*32 > lo {
			t.Fatalf("bucket %d [%d, %d) is wider than 1/32 of its values", b, lo, hi)
		}
	}
	for _, v := range []uint64{1 << 30, 1<<40 - 1} {
		if b := bucketOf(v); v < bucketFloor(b) || v >= bucketFloor(b+1) {
			t.Errorf("bucketOf(%d) = %d, which holds [%d, %d)", v, b, bucketFloor(b), bucketFloor(b+1))
		}
	}
	if b := bucketOf(1 << 50); b != histBuckets-1 {
		t.Errorf("bucketOf(2^50) = %d, want the last bucket %d", b, histBuckets-1)
	}
}

func TestHistQuantile(t *testing.T) {
	var h hist
	if got := h.quantile(0.5); got != 0 {
		t.Errorf("empty: quantile(0.5) = %v, want 0", got)
	}
	for range 98 {
		h.add(10 * time.Microsecond)
	}
	h.add(20 * time.Microsecond)
	h.add(time.Millisecond)
	var o hist
	o.merge(&h)
	// Values land in buckets [9984ns, 10240ns), [19968ns, 20480ns) and
	// [999424ns, 1015808ns); a quantile is the middle of its bucket.
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.01, 10111}, {0.5, 10111}, {0.98, 10111}, {0.99, 20223}, {1, 1007615}} {
		if got := o.quantile(c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
}
