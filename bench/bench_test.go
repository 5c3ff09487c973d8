// Package bench measures github.com/nsqkit/go-nsq against
// github.com/nsqio/go-nsq v1.1.0, both publishing to the same real nsqd
// v1.3.0 running as a separate process (internal/nsqdtest), and against
// hand-written raw socket clients that do the same work with no library:
// the ceilings.
//
// Every scenario publishes 100-byte bodies to one ephemeral topic of an
// nsqd started with --mem-queue-size=0. With no channel on the topic, nsqd
// decodes, counts and encodes every message, then drops it (an ephemeral
// topic has no disk queue): the same work for every message, and a heap
// that does not grow, so nsqd's garbage collector costs every run the same
// per message. After every run the topic's message_count must have grown
// by exactly the number of messages the run published.
//
// Two entry points (see README.md):
//
//   - the Benchmark functions in this file, for benchstat: one op is one
//     message, whatever the scenario (a MultiPublish of 100 counts 100 ops);
//   - TestCompare (compare_test.go): every client of every scenario, the
//     ceilings included, in rotated order over several rounds, reporting
//     the median and the range of throughput, client and nsqd CPU per
//     message, sync latency, and ratios paired within each round.
package bench

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"strings"
	"sync"
	"testing"
	"time"

	gonsq "github.com/nsqio/go-nsq"
	nsq "github.com/nsqkit/go-nsq"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
)

const (
	// topic is ephemeral: nsqd drops what it cannot hold in memory instead
	// of writing it to disk, and with --mem-queue-size=0 it holds nothing.
	topic      = "bench#ephemeral"
	bodySize   = 100
	mpubSize   = 100 // bodies per MultiPublish
	doneQueue  = 1024
	goroutines = 64 // publishers in the Publish64 scenario
	// asyncCheck is how many async calls go between two looks at the
	// clock, so that reading it costs nothing measurable.
	asyncCheck = 16
)

// body is the message every scenario publishes.
var body = bytes.Repeat([]byte("0123456789"), bodySize/10)

// nsqdArgs are nsqd's flags for every benchmark: see the package comment.
var nsqdArgs = []string{"--mem-queue-size=0"}

// startNsqd starts nsqd for t. nsqdtest.Start stops it on t.Cleanup, so it
// lives as long as t: the whole of TestCompare, or one top-level benchmark
// with its sub-benchmarks.
func startNsqd(t testing.TB) *nsqdtest.Nsqd {
	t.Helper()
	return nsqdtest.Start(t, nsqdArgs...)
}

// messageCount returns the topic's message_count summed over the nsqd ds:
// messages published to it since they started. A pool's messages land on
// its nodes in no set proportion, so only the sum is checked.
func messageCount(t testing.TB, ds ...*nsqdtest.Nsqd) int64 {
	t.Helper()
	var sum int64
	for _, d := range ds {
		s, err := d.Stats(topic)
		if err != nil {
			t.Fatal(err)
		}
		sum += s.MessageCount
	}
	return sum
}

// checkPublished fails t unless the topic's message_count, summed over ds,
// is want more than before.
func checkPublished(t testing.TB, what string, before int64, want int, ds ...*nsqdtest.Nsqd) {
	t.Helper()
	if got := messageCount(t, ds...) - before; got != int64(want) {
		t.Errorf("%s: nsqd's message_count grew by %d, want %d", what, got, want)
	}
}

// budget bounds one run: a number of messages (the Benchmark functions'
// b.N) or a deadline (TestCompare). A run always makes at least one call.
type budget struct {
	msgs     int       // > 0: publish exactly this many messages
	deadline time.Time // msgs == 0: publish until this time
}

// next returns how many messages the next call of per messages carries:
// per, or what is left of msgs.
func (b budget) next(sent, per int) int {
	if b.msgs > 0 {
		return min(per, b.msgs-sent)
	}
	return per
}

// over reports whether a run that has sent sent messages, and read the
// clock at now, must stop.
func (b budget) over(sent int, now time.Time) bool {
	if b.msgs > 0 {
		return sent >= b.msgs
	}
	return !now.Before(b.deadline)
}

// overAsync is over for async loops, which look at the clock only every
// asyncCheck calls.
func (b budget) overAsync(sent, calls int) bool {
	if b.msgs > 0 {
		return sent >= b.msgs
	}
	return calls%asyncCheck == 0 && !time.Now().Before(b.deadline)
}

// split divides b between g goroutines.
func (b budget) split(g, of int) budget {
	if b.msgs == 0 {
		return b
	}
	n := b.msgs / of
	if g < b.msgs%of {
		n++
	}
	return budget{msgs: n}
}

// producer is what the scenarios need from a library. Both libraries'
// producers have Publish, MultiPublish and Stop with these signatures;
// the async methods wrap their PublishAsync and MultiPublishAsync, whose
// doneChan types differ.
type producer interface {
	Publish(topic string, body []byte) error
	MultiPublish(topic string, bodies [][]byte) error
	Stop()
	// publishAsync publishes body with PublishAsync from the calling
	// goroutine within b while another goroutine takes the results from
	// doneChan. It returns once every result is in, with the number of
	// messages published and the first error.
	publishAsync(b budget) (int, error)
	// multiPublishAsync does the same with MultiPublishAsync of bodies.
	multiPublishAsync(b budget, bodies [][]byte) (int, error)
}

// library is one of the clients under test: a Producer of either library,
// or an nsqkit ProducerPool (pool_test.go).
type library struct {
	name string // sub-benchmark and report name
	// nodes is how many nsqd it publishes to: the main one, then others
	// started the same way.
	nodes int
	// connect returns a producer to the nsqd TCP addresses addrs (nodes
	// of them).
	connect func(addrs []string) (producer, error)
}

var (
	nsqkit    = library{name: "nsqkit", nodes: 1, connect: newNsqkit}
	gonsqLib  = library{name: "go-nsq", nodes: 1, connect: newGonsq}
	libraries = []library{nsqkit, gonsqLib}
)

// nsqkitProducer adapts an nsqkit *nsq.Producer or *nsq.ProducerPool
// (github.com/nsqkit/go-nsq): both are nsq.Publishers.
type nsqkitProducer struct{ nsq.Publisher }

// batches returns how many automatic MPUB batches the producer has sent,
// and how many messages they held: a pool's are its nodes' Producers'.
func (p nsqkitProducer) batches() (batches, msgs uint64) {
	switch q := p.Publisher.(type) {
	case *nsq.Producer:
		st := q.Stats()
		return st.Batches, st.BatchedMessages
	case *nsq.ProducerPool:
		for _, n := range q.Stats().Nodes {
			batches += n.Producer.Batches
			msgs += n.Producer.BatchedMessages
		}
	}
	return batches, msgs
}

// nsqkitOptions are Config options for nsqkit's producers, as
// "option=value" pairs separated by commas (-nsqkit flag; empty: defaults).
var nsqkitOptions = flag.String("nsqkit", "", "`options` for nsqkit's Config, as option=value pairs separated by commas, e.g. max_pending_bytes=4194304")

// nsqkitConfig returns nsqkit's Config with the -nsqkit options.
func nsqkitConfig() (*nsq.Config, error) {
	cfg := nsq.NewConfig()
	for _, kv := range strings.Split(*nsqkitOptions, ",") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if err := cfg.Set(k, v); err != nil {
			return nil, fmt.Errorf("-nsqkit %s: %w", kv, err)
		}
	}
	return cfg, nil
}

func newNsqkit(addrs []string) (producer, error) {
	cfg, err := nsqkitConfig()
	if err != nil {
		return nil, err
	}
	p, err := nsq.NewProducer(addrs[0], cfg)
	if err != nil {
		return nil, err
	}
	p.SetLogger(nil, nsq.LogLevelInfo)
	return nsqkitProducer{p}, nil
}

func (p nsqkitProducer) publishAsync(b budget) (int, error) {
	done := make(chan *nsq.ProducerTransaction, doneQueue)
	return asyncRun(b, 1, done, func(t *nsq.ProducerTransaction) error { return t.Error },
		func(int) error { return p.PublishAsync(topic, body, done) })
}

func (p nsqkitProducer) multiPublishAsync(b budget, bodies [][]byte) (int, error) {
	done := make(chan *nsq.ProducerTransaction, doneQueue)
	return asyncRun(b, len(bodies), done, func(t *nsq.ProducerTransaction) error { return t.Error },
		func(k int) error { return p.MultiPublishAsync(topic, bodies[:k], done) })
}

// gonsqProducer adapts *gonsq.Producer (github.com/nsqio/go-nsq v1.1.0).
type gonsqProducer struct{ *gonsq.Producer }

func newGonsq(addrs []string) (producer, error) {
	p, err := gonsq.NewProducer(addrs[0], gonsq.NewConfig())
	if err != nil {
		return nil, err
	}
	p.SetLogger(log.New(io.Discard, "", 0), gonsq.LogLevelError)
	return gonsqProducer{p}, nil
}

func (p gonsqProducer) publishAsync(b budget) (int, error) {
	done := make(chan *gonsq.ProducerTransaction, doneQueue)
	return asyncRun(b, 1, done, func(t *gonsq.ProducerTransaction) error { return t.Error },
		func(int) error { return p.PublishAsync(topic, body, done) })
}

func (p gonsqProducer) multiPublishAsync(b budget, bodies [][]byte) (int, error) {
	done := make(chan *gonsq.ProducerTransaction, doneQueue)
	return asyncRun(b, len(bodies), done, func(t *gonsq.ProducerTransaction) error { return t.Error },
		func(k int) error { return p.MultiPublishAsync(topic, bodies[:k], done) })
}

// asyncRun makes async calls of up to per messages with publish (given the
// number of messages of the call) from the calling goroutine within b,
// while another goroutine takes their results from done. It returns once
// every accepted call has its result, with the messages published and the
// first error.
func asyncRun[T any](b budget, per int, done chan T, errOf func(T) error, publish func(k int) error) (int, error) {
	result := make(chan error, 1)
	total := make(chan int, 1) // the number of calls, once known
	go func() {
		var first error
		for got, want := 0, -1; got != want; {
			select {
			case t := <-done:
				got++
				if err := errOf(t); err != nil && first == nil {
					first = err
				}
			case want = <-total:
			}
		}
		result <- first
	}()
	sent, calls := 0, 0
	var err error
	for {
		k := b.next(sent, per)
		if err = publish(k); err != nil {
			break
		}
		sent += k
		calls++
		if b.overAsync(sent, calls) {
			break
		}
	}
	total <- calls
	return sent, errors.Join(err, <-result)
}

// connect returns a producer of lib connected to the first lib.nodes of ds.
// Both libraries' Producers connect lazily, so one Publish (not measured)
// makes the connection and creates the topic; a pool connects to every
// node in the background, and connect waits until all are up.
func connect(t testing.TB, lib library, ds []*nsqdtest.Nsqd) producer {
	t.Helper()
	var addrs []string
	for _, d := range ds[:lib.nodes] {
		addrs = append(addrs, d.TCPAddr())
	}
	p, err := lib.connect(addrs)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(topic, body); err != nil {
		p.Stop()
		t.Fatalf("%s: warm-up Publish: %v", lib.name, err)
	}
	if kit, ok := p.(nsqkitProducer); ok {
		if pool, ok := kit.Publisher.(*nsq.ProducerPool); ok {
			waitUp(t, pool, lib.nodes)
		}
	}
	return p
}

// scenario is one way of publishing with a library, and the raw clients
// that do the same work without one.
type scenario struct {
	name string // report row
	// sync scenarios time every call; lat has one histogram per
	// publishing goroutine (async scenarios get nil).
	sync bool
	// publishers is how many goroutines publish, each with its own
	// latency histogram (0 means 1).
	publishers int
	run        func(p producer, b budget, lat *latencies) (int, error)
	// pools: TestCompare also runs nsqkit's ProducerPools (pools).
	pools bool
	raw   []rawClient
}

// goroutines returns how many latency histograms sc's runs need.
func (sc scenario) goroutines() int { return max(sc.publishers, 1) }

var (
	scPublish1 = scenario{name: "Publish, 1 goroutine", sync: true, run: publish1,
		raw: []rawClient{rawSyncPUB, rawSyncPUBReader, rawSyncPUBRW}}
	scPublish64 = scenario{name: "Publish, 64 goroutines", sync: true, publishers: goroutines, run: publish64, pools: true}
	// scPublishAsync's raw client is set by TestCompare to nsqkit's mean
	// batch size.
	scPublishAsync = scenario{name: "PublishAsync", run: publishAsync, pools: true,
		raw: []rawClient{rawPipelinedPUB}}
	scMultiPublish = scenario{name: "MultiPublish 100", sync: true, run: multiPublish100,
		raw: []rawClient{rawSyncMPUB, rawSyncMPUBRW}}
	scMultiAsync = scenario{name: "MultiPublishAsync 100", run: multiPublishAsync100,
		raw: []rawClient{rawPipelinedMPUB}}
	scenarios = []scenario{scPublish1, scPublish64, scPublishAsync, scMultiPublish, scMultiAsync}
)

// publish1: sync Publish, one call after the other.
func publish1(p producer, b budget, lat *latencies) (int, error) {
	return publishLoop(p, b, lat.of(0))
}

// publishLoop makes sync Publish calls within b, timing each.
func publishLoop(p producer, b budget, h *hist) (int, error) {
	sent := 0
	for {
		start := time.Now()
		if err := p.Publish(topic, body); err != nil {
			return sent, err
		}
		now := time.Now()
		h.add(now.Sub(start))
		sent++
		if b.over(sent, now) {
			return sent, nil
		}
	}
}

// publish64: sync Publish from 64 goroutines sharing the producer.
func publish64(p producer, b budget, lat *latencies) (int, error) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		sent  int
		first error
	)
	for g := range goroutines {
		wg.Go(func() {
			n, err := publishLoop(p, b.split(g, goroutines), lat.of(g))
			mu.Lock()
			defer mu.Unlock()
			sent += n
			if err != nil && first == nil {
				first = err
			}
		})
	}
	wg.Wait()
	return sent, first
}

// publishAsync: a stream of PublishAsync, results drained by another
// goroutine.
func publishAsync(p producer, b budget, _ *latencies) (int, error) {
	return p.publishAsync(b)
}

// bodies returns mpubSize bodies for MultiPublish.
func bodies() [][]byte {
	bs := make([][]byte, mpubSize)
	for i := range bs {
		bs[i] = body
	}
	return bs
}

// multiPublish100: sync MultiPublish of 100 bodies at a time (with a
// message budget, the last call takes the remainder).
func multiPublish100(p producer, b budget, lat *latencies) (int, error) {
	bs := bodies()
	h := lat.of(0)
	sent := 0
	for {
		k := b.next(sent, mpubSize)
		start := time.Now()
		if err := p.MultiPublish(topic, bs[:k]); err != nil {
			return sent, err
		}
		now := time.Now()
		h.add(now.Sub(start))
		sent += k
		if b.over(sent, now) {
			return sent, nil
		}
	}
}

// multiPublishAsync100: a stream of MultiPublishAsync of 100 bodies,
// results drained by another goroutine.
func multiPublishAsync100(p producer, b budget, _ *latencies) (int, error) {
	return p.multiPublishAsync(b, bodies())
}

// benchLibraries runs sc for every library as sub-benchmarks of b, all
// against one nsqd.
func benchLibraries(b *testing.B, sc scenario) {
	d := startNsqd(b)
	for _, lib := range libraries {
		b.Run(lib.name, func(b *testing.B) {
			p := connect(b, lib, []*nsqdtest.Nsqd{d})
			defer p.Stop()
			lat := newLatencies(sc.goroutines())
			before := messageCount(b, d)
			b.ReportAllocs()
			b.SetBytes(bodySize)
			b.ResetTimer()
			n, err := sc.run(p, budget{msgs: b.N}, lat)
			b.StopTimer()
			if err != nil {
				b.Fatalf("%s %s: %v", sc.name, lib.name, err)
			}
			reportBench(b, sc.sync, lat)
			checkPublished(b, sc.name+" "+lib.name, before, n, d)
		})
	}
}

// benchRaw runs each raw client as a sub-benchmark of b.
func benchRaw(b *testing.B, clients ...rawClient) {
	d := startNsqd(b)
	for _, rc := range clients {
		b.Run(rc.slug(), func(b *testing.B) {
			c := dialWarm(b, d)
			defer c.Close()
			lat := newLatencies(1)
			before := messageCount(b, d)
			b.ReportAllocs()
			b.SetBytes(bodySize)
			b.ResetTimer()
			n, err := rc.run(c, budget{msgs: b.N}, lat.of(0))
			b.StopTimer()
			if err != nil {
				b.Fatalf("%s: %v", rc.name, err)
			}
			reportBench(b, rc.sync, lat)
			checkPublished(b, rc.name, before, n, d)
		})
	}
}

// reportBench adds msgs/s and, for sync runs, the p50 and p99 latency of
// one call to b's results.
func reportBench(b *testing.B, sync bool, lat *latencies) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if sync {
		h := lat.merged()
		b.ReportMetric(float64(h.quantile(0.50).Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(h.quantile(0.99).Nanoseconds())/1e3, "p99-µs")
	}
}

func BenchmarkPublish(b *testing.B)              { benchLibraries(b, scPublish1) }
func BenchmarkPublish64(b *testing.B)            { benchLibraries(b, scPublish64) }
func BenchmarkPublishAsync(b *testing.B)         { benchLibraries(b, scPublishAsync) }
func BenchmarkMultiPublish100(b *testing.B)      { benchLibraries(b, scMultiPublish) }
func BenchmarkMultiPublishAsync100(b *testing.B) { benchLibraries(b, scMultiAsync) }

// BenchmarkRaw runs every ceiling, with a pipelined MPUB of 500 standing
// for the one TestCompare sizes to nsqkit's mean PublishAsync batch.
func BenchmarkRaw(b *testing.B) {
	benchRaw(b, rawSyncPUB, rawSyncPUBRW, rawSyncPUBReader, rawPipelinedPUB,
		rawPipelinedMPUBOf(500), rawSyncMPUB, rawSyncMPUBRW, rawPipelinedMPUB)
}
