// Package bench measures github.com/nsqkit/go-nsq against
// github.com/nsqio/go-nsq v1.1.0, both publishing to the same real nsqd
// v1.3.0 running as a separate process (internal/nsqdtest), and against a
// hand-written pipelined socket that shows what nsqd itself can take.
//
// Every scenario publishes 100-byte bodies to one topic. nsqd keeps them in
// memory (--mem-queue-size=100000000) and the topic is emptied after every
// run. After every run the topic's message_count must have grown by exactly
// the number of messages the run published.
//
// Two entry points (see README.md):
//
//   - the Benchmark functions in this file, for benchstat: one op is one
//     message, whatever the scenario (a MultiPublish of 100 counts 100 ops);
//   - TestCompare (compare_test.go): both libraries interleaved over several
//     rounds, reporting medians of throughput, allocations and client CPU
//     per message.
package bench

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"sync"
	"testing"

	gonsq "github.com/nsqio/go-nsq"
	nsq "github.com/nsqkit/go-nsq"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
)

const (
	topic     = "bench"
	bodySize  = 100
	mpubSize  = 100  // bodies per MultiPublish
	doneQueue = 1024 // PublishAsync's doneChan buffer
)

// body is the message every scenario publishes.
var body = bytes.Repeat([]byte("0123456789"), bodySize/10)

// startNsqd starts nsqd for t. nsqdtest.Start stops it on t.Cleanup, so it
// lives as long as t: the whole of TestCompare, one top-level benchmark with
// sub-benchmarks, or one b.N run of a benchmark without them (BenchmarkRaw*).
func startNsqd(t testing.TB) *nsqdtest.Nsqd {
	t.Helper()
	return nsqdtest.Start(t, "--mem-queue-size=100000000")
}

// messageCount returns the topic's message_count: messages published to it
// since nsqd started (emptying the topic does not reset it).
func messageCount(t testing.TB, d *nsqdtest.Nsqd) int64 {
	t.Helper()
	s, err := d.Stats(topic)
	if err != nil {
		t.Fatal(err)
	}
	return s.MessageCount
}

// emptyTopic drops the messages nsqd holds for the topic, so that its
// memory stays bounded however long the benchmarks run.
func emptyTopic(t testing.TB, d *nsqdtest.Nsqd) {
	t.Helper()
	resp, err := http.Post("http://"+d.HTTPAddr()+"/topic/empty?topic="+topic, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("emptying topic %s: %s: %s", topic, resp.Status, msg)
	}
}

// producer is what the scenarios need from a library. Both libraries'
// producers have Publish, MultiPublish and Stop with these signatures;
// PublishAsyncN wraps their PublishAsync, whose doneChan types differ.
type producer interface {
	Publish(topic string, body []byte) error
	MultiPublish(topic string, bodies [][]byte) error
	Stop()
	// PublishAsyncN publishes body n times with PublishAsync from the
	// calling goroutine while another goroutine takes the n results from
	// doneChan. It returns once all n results are in, with the first error.
	PublishAsyncN(topic string, body []byte, n int) error
	// MultiPublishAsyncN makes calls MultiPublishAsync calls of bodies the
	// same way.
	MultiPublishAsyncN(topic string, bodies [][]byte, calls int) error
}

// library is one of the clients under test.
type library struct {
	name    string // sub-benchmark name
	label   string // report column name
	connect func(addr string) (producer, error)
}

var libraries = []library{
	{name: "nsqkit", label: "nsqkit", connect: newNsqkit},
	{name: "gonsq", label: "go-nsq", connect: newGonsq},
}

// nsqkitProducer adapts *nsq.Producer (github.com/nsqkit/go-nsq).
type nsqkitProducer struct{ *nsq.Producer }

func newNsqkit(addr string) (producer, error) {
	p, err := nsq.NewProducer(addr, nsq.NewConfig())
	if err != nil {
		return nil, err
	}
	p.SetLogger(nil, nsq.LogLevelInfo)
	return nsqkitProducer{p}, nil
}

func (p nsqkitProducer) PublishAsyncN(topic string, body []byte, n int) error {
	done := make(chan *nsq.ProducerTransaction, doneQueue)
	return asyncN(n, done, func(t *nsq.ProducerTransaction) error { return t.Error },
		func() error { return p.PublishAsync(topic, body, done) })
}

func (p nsqkitProducer) MultiPublishAsyncN(topic string, bodies [][]byte, calls int) error {
	done := make(chan *nsq.ProducerTransaction, doneQueue)
	return asyncN(calls, done, func(t *nsq.ProducerTransaction) error { return t.Error },
		func() error { return p.MultiPublishAsync(topic, bodies, done) })
}

// gonsqProducer adapts *gonsq.Producer (github.com/nsqio/go-nsq v1.1.0).
type gonsqProducer struct{ *gonsq.Producer }

func newGonsq(addr string) (producer, error) {
	p, err := gonsq.NewProducer(addr, gonsq.NewConfig())
	if err != nil {
		return nil, err
	}
	p.SetLogger(log.New(io.Discard, "", 0), gonsq.LogLevelError)
	return gonsqProducer{p}, nil
}

func (p gonsqProducer) PublishAsyncN(topic string, body []byte, n int) error {
	done := make(chan *gonsq.ProducerTransaction, doneQueue)
	return asyncN(n, done, func(t *gonsq.ProducerTransaction) error { return t.Error },
		func() error { return p.PublishAsync(topic, body, done) })
}

func (p gonsqProducer) MultiPublishAsyncN(topic string, bodies [][]byte, calls int) error {
	done := make(chan *gonsq.ProducerTransaction, doneQueue)
	return asyncN(calls, done, func(t *gonsq.ProducerTransaction) error { return t.Error },
		func() error { return p.MultiPublishAsync(topic, bodies, done) })
}

// asyncN makes n async calls with publish from the calling goroutine while
// another goroutine takes the n results from done. It returns once all n
// results are in, with the first error.
func asyncN[T any](n int, done chan T, errOf func(T) error, publish func() error) error {
	result := make(chan error, 1)
	go func() {
		var first error
		for range n {
			if err := errOf(<-done); err != nil && first == nil {
				first = err
			}
		}
		result <- first
	}()
	for range n {
		if err := publish(); err != nil {
			return err // the drainer is left waiting; the run fails anyway
		}
	}
	return <-result
}

// connect returns a connected producer: both libraries connect lazily, so
// one Publish (not measured) makes the connection and creates the topic.
func connect(t testing.TB, lib library, d *nsqdtest.Nsqd) producer {
	t.Helper()
	p, err := lib.connect(d.TCPAddr())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(topic, body); err != nil {
		p.Stop()
		t.Fatalf("%s: warm-up Publish: %v", lib.label, err)
	}
	return p
}

// scenario is one way of publishing n messages with a producer.
type scenario struct {
	name string // report row
	msgs int    // default messages per TestCompare run
	run  func(p producer, n int) error
}

var (
	scPublish1     = scenario{name: "Publish, 1 goroutine", msgs: 30_000, run: publish1}
	scPublish64    = scenario{name: "Publish, 64 goroutines", msgs: 150_000, run: publish64}
	scPublishAsync = scenario{name: "PublishAsync", msgs: 300_000, run: publishAsync}
	scMultiPublish = scenario{name: "MultiPublish 100", msgs: 1_000_000, run: multiPublish100}
	scMultiAsync   = scenario{name: "MultiPublishAsync 100", msgs: 2_000_000, run: multiPublishAsync100}
	scenarios      = []scenario{scPublish1, scPublish64, scPublishAsync, scMultiPublish, scMultiAsync}
)

// publish1: sync Publish, one call after the other.
func publish1(p producer, n int) error {
	for range n {
		if err := p.Publish(topic, body); err != nil {
			return err
		}
	}
	return nil
}

// publish64: sync Publish from 64 goroutines sharing the producer, the n
// messages split evenly between them.
func publish64(p producer, n int) error {
	const goroutines = 64
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for g := range goroutines {
		count := n / goroutines
		if g < n%goroutines {
			count++
		}
		wg.Go(func() {
			for range count {
				if err := p.Publish(topic, body); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// publishAsync: a stream of PublishAsync, results drained by another
// goroutine.
func publishAsync(p producer, n int) error {
	return p.PublishAsyncN(topic, body, n)
}

// multiPublish100: sync MultiPublish of 100 bodies at a time (the last call
// takes the remainder when n is not a multiple of 100).
func multiPublish100(p producer, n int) error {
	bodies := make([][]byte, mpubSize)
	for i := range bodies {
		bodies[i] = body
	}
	for sent := 0; sent < n; sent += mpubSize {
		if err := p.MultiPublish(topic, bodies[:min(mpubSize, n-sent)]); err != nil {
			return err
		}
	}
	return nil
}

// multiPublishAsync100: a stream of MultiPublishAsync of 100 bodies, results
// drained by another goroutine; a sync MultiPublish takes the remainder when
// n is not a multiple of 100.
func multiPublishAsync100(p producer, n int) error {
	bodies := make([][]byte, mpubSize)
	for i := range bodies {
		bodies[i] = body
	}
	if err := p.MultiPublishAsyncN(topic, bodies, n/mpubSize); err != nil {
		return err
	}
	if rest := n % mpubSize; rest > 0 {
		return p.MultiPublish(topic, bodies[:rest])
	}
	return nil
}

// checkPublished fails t unless the topic's message_count is want more
// than before, then empties the topic.
func checkPublished(t testing.TB, d *nsqdtest.Nsqd, what string, before int64, want int) {
	t.Helper()
	if got := messageCount(t, d) - before; got != int64(want) {
		t.Errorf("%s: nsqd's message_count grew by %d, want %d", what, got, want)
	}
	emptyTopic(t, d)
}

// benchLibraries runs sc for every library as sub-benchmarks of b, all
// against one nsqd.
func benchLibraries(b *testing.B, sc scenario) {
	d := startNsqd(b)
	for _, lib := range libraries {
		b.Run(lib.name, func(b *testing.B) {
			p := connect(b, lib, d)
			defer p.Stop()
			before := messageCount(b, d)
			b.ReportAllocs()
			b.SetBytes(bodySize)
			b.ResetTimer()
			err := sc.run(p, b.N)
			b.StopTimer()
			if err != nil {
				b.Fatalf("%s %s: %v", sc.name, lib.label, err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			checkPublished(b, d, sc.name+" "+lib.label, before, b.N)
		})
	}
}

func BenchmarkPublish(b *testing.B)              { benchLibraries(b, scPublish1) }
func BenchmarkPublish64(b *testing.B)            { benchLibraries(b, scPublish64) }
func BenchmarkPublishAsync(b *testing.B)         { benchLibraries(b, scPublishAsync) }
func BenchmarkMultiPublish100(b *testing.B)      { benchLibraries(b, scMultiPublish) }
func BenchmarkMultiPublishAsync100(b *testing.B) { benchLibraries(b, scMultiAsync) }

// benchRaw measures the raw pipelined socket (raw_test.go) publishing b.N
// messages in commands of perCmd messages.
func benchRaw(b *testing.B, perCmd int) {
	d := startNsqd(b) // once per b.N run: see startNsqd
	c, err := dialRaw(d.TCPAddr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	before := messageCount(b, d)
	b.ReportAllocs()
	b.SetBytes(bodySize)
	b.ResetTimer()
	err = c.publish(topic, body, b.N, perCmd)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	checkPublished(b, d, fmt.Sprintf("raw, %d per command", perCmd), before, b.N)
}

func BenchmarkRawPUB(b *testing.B)     { benchRaw(b, 1) }
func BenchmarkRawMPUB100(b *testing.B) { benchRaw(b, mpubSize) }
