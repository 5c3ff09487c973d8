package bench

import (
	"regexp"
	"strings"
	"testing"
	"time"

	nsq "github.com/nsqkit/go-nsq"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
)

// The ProducerPools TestCompare runs beside the Producers in the scenarios
// marked pools: one over three nsqd (the main one and two more started the
// same way), and one over the main nsqd alone, which tells the pool's own
// cost from that of three nsqd sharing the machine's cores.
var (
	poolOf3 = library{name: "nsqkit pool of 3", nodes: 3, connect: newNsqkitPool}
	poolOf1 = library{name: "nsqkit pool of 1", nodes: 1, connect: newNsqkitPool}
	pools   = []library{poolOf3, poolOf1}
)

// newNsqkitPool returns a ProducerPool over addrs with nsqkit's Config (the
// -nsqkit options apply to every node's Producer).
func newNsqkitPool(addrs []string) (producer, error) {
	cfg, err := nsqkitConfig()
	if err != nil {
		return nil, err
	}
	p, err := nsq.NewProducerPool(addrs, cfg)
	if err != nil {
		return nil, err
	}
	p.SetLogger(nil, nsq.LogLevelInfo)
	return nsqkitProducer{p}, nil
}

// waitUp waits until n of the pool's nodes are up, so that a run starts
// with every node connected.
func waitUp(t testing.TB, p *nsq.ProducerPool, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		up := 0
		for _, node := range p.Stats().Nodes {
			if node.State == "up" {
				up++
			}
		}
		if up == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v: %d of %d nodes up", p, up, n)
		}
		time.Sleep(5 * time.Millisecond) // the pool offers nothing to wait on
	}
}

// TestPoolCompare is TestCompare limited to the scenarios with pools
// (unless -scenario says otherwise): the pools beside nsqkit's and go-nsq's
// Producers and the raw clients, in the same rotated rounds.
//
//	go -C bench test -run TestPoolCompare -v
func TestPoolCompare(t *testing.T) {
	only := *flagOnly
	if only == "" {
		only = poolScenarios()
	}
	compare(t, only)
}

// poolScenarios returns a regexp matching exactly the names of the
// scenarios with pools.
func poolScenarios() string {
	var names []string
	for _, sc := range scenarios {
		if sc.pools {
			names = append(names, regexp.QuoteMeta(sc.name))
		}
	}
	return "^(" + strings.Join(names, "|") + ")$"
}

// benchPools runs sc for nsqkit's Producer and the two pools as
// sub-benchmarks of b, against three nsqd (the Producer and the pool of 1
// use the first), for profiling the pool against the Producer:
//
//	go -C bench test -run '^$' -bench 'BenchmarkPoolPublishAsync/pool-of-1$' -benchtime 3000000x -cpuprofile /tmp/cpu.out
func benchPools(b *testing.B, sc scenario) {
	ds := []*nsqdtest.Nsqd{startNsqd(b), startNsqd(b), startNsqd(b)}
	for _, lib := range []library{nsqkit, poolOf1, poolOf3} {
		b.Run(strings.ReplaceAll(strings.TrimPrefix(lib.name, "nsqkit "), " ", "-"), func(b *testing.B) {
			p := connect(b, lib, ds)
			defer p.Stop()
			lat := newLatencies(sc.goroutines())
			before := messageCount(b, ds[:lib.nodes]...)
			b.ReportAllocs()
			b.SetBytes(bodySize)
			b.ResetTimer()
			cpu := cpuTime()
			n, err := sc.run(p, budget{msgs: b.N}, lat)
			cpu = cpuTime() - cpu
			b.StopTimer()
			if err != nil {
				b.Fatalf("%s %s: %v", sc.name, lib.name, err)
			}
			reportBench(b, sc.sync, lat)
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(max(n, 1)), "cpu-µs/msg")
			checkPublished(b, sc.name+" "+lib.name, before, n, ds[:lib.nodes]...)
		})
	}
}

// BenchmarkPoolPublishAsync: the PublishAsync stream, Producer and pools.
func BenchmarkPoolPublishAsync(b *testing.B) { benchPools(b, scPublishAsync) }

// BenchmarkPoolPublish64: sync Publish from 64 goroutines, Producer and
// pools.
func BenchmarkPoolPublish64(b *testing.B) { benchPools(b, scPublish64) }
