package bench

// TestPoolCompare measures a ProducerPool over three nsqd against one
// nsqkit Producer to one nsqd and go-nsq v1.1.0's Producer to one nsqd, for
// an async stream and for 64 sync goroutines, in interleaved rounds, and
// prints the medians and the ratios. It is self-contained (its own names,
// all prefixed pc) so that it does not depend on the rest of the package.
//
//	go -C bench test -run TestPoolCompare -v
//
// With -short it runs one tiny round, as a check that every run publishes
// exactly what it says.

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gonsq "github.com/nsqio/go-nsq"
	nsq "github.com/nsqkit/go-nsq"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
)

const pcTopic = "poolbench"

var pcBody = bytes.Repeat([]byte("0123456789"), 10)

// pcPublisher is what a contender offers: sync Publish, an async stream of
// n with its results drained, and Stop.
type pcPublisher interface {
	Publish(topic string, body []byte) error
	asyncN(n int) error
	Stop()
}

type pcNsqkit struct{ nsq.Publisher }

func (p pcNsqkit) asyncN(n int) error {
	done := make(chan *nsq.ProducerTransaction, 1024)
	errc := make(chan error, 1)
	go func() {
		var first error
		for range n {
			if t := <-done; t.Error != nil && first == nil {
				first = t.Error
			}
		}
		errc <- first
	}()
	for range n {
		if err := p.PublishAsync(pcTopic, pcBody, done); err != nil {
			return err
		}
	}
	return <-errc
}

type pcGonsq struct{ *gonsq.Producer }

func (p pcGonsq) asyncN(n int) error {
	done := make(chan *gonsq.ProducerTransaction, 1024)
	errc := make(chan error, 1)
	go func() {
		var first error
		for range n {
			if t := <-done; t.Error != nil && first == nil {
				first = t.Error
			}
		}
		errc <- first
	}()
	for range n {
		if err := p.PublishAsync(pcTopic, pcBody, done); err != nil {
			return err
		}
	}
	return <-errc
}

func pcSync64(p pcPublisher, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		share := n / 64
		if g < n%64 {
			share++
		}
		wg.Go(func() {
			for range share {
				if err := p.Publish(pcTopic, pcBody); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func pcCount(t testing.TB, ds []*nsqdtest.Nsqd) int64 {
	t.Helper()
	var sum int64
	for _, d := range ds {
		s, err := d.Stats(pcTopic)
		if err != nil {
			t.Fatal(err)
		}
		sum += s.MessageCount
	}
	return sum
}

func pcEmpty(t testing.TB, ds []*nsqdtest.Nsqd) {
	t.Helper()
	for _, d := range ds {
		resp, err := http.Post("http://"+d.HTTPAddr()+"/topic/empty?topic="+pcTopic, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func TestPoolCompare(t *testing.T) {
	rounds, asyncMsgs, syncMsgs := 5, 300_000, 150_000
	if testing.Short() {
		rounds, asyncMsgs, syncMsgs = 1, 300, 300
	}
	var ds []*nsqdtest.Nsqd
	for range 3 {
		ds = append(ds, nsqdtest.Start(t, "--mem-queue-size=100000000"))
	}
	addrs := []string{ds[0].TCPAddr(), ds[1].TCPAddr(), ds[2].TCPAddr()}

	type contender struct {
		name  string
		nodes []*nsqdtest.Nsqd
		open  func() (pcPublisher, error)
	}
	contenders := []contender{
		{"pool of 3", ds, func() (pcPublisher, error) {
			p, err := nsq.NewProducerPool(addrs, nsq.NewConfig())
			if err != nil {
				return nil, err
			}
			p.SetLogger(nil, nsq.LogLevelError)
			return pcNsqkit{p}, nil
		}},
		{"pool of 1", ds[:1], func() (pcPublisher, error) {
			p, err := nsq.NewProducerPool(addrs[:1], nsq.NewConfig())
			if err != nil {
				return nil, err
			}
			p.SetLogger(nil, nsq.LogLevelError)
			return pcNsqkit{p}, nil
		}},
		{"nsqkit Producer", ds[:1], func() (pcPublisher, error) {
			p, err := nsq.NewProducer(addrs[0], nsq.NewConfig())
			if err != nil {
				return nil, err
			}
			p.SetLogger(nil, nsq.LogLevelError)
			return pcNsqkit{p}, nil
		}},
		{"go-nsq Producer", ds[:1], func() (pcPublisher, error) {
			p, err := gonsq.NewProducer(addrs[0], gonsq.NewConfig())
			if err != nil {
				return nil, err
			}
			p.SetLogger(log.New(io.Discard, "", 0), gonsq.LogLevelError)
			return pcGonsq{p}, nil
		}},
	}
	scenarios := []struct {
		name string
		msgs int
		run  func(p pcPublisher, n int) error
	}{
		{"PublishAsync", asyncMsgs, func(p pcPublisher, n int) error { return p.asyncN(n) }},
		{"Publish, 64 goroutines", syncMsgs, pcSync64},
	}
	rates := map[string][]float64{} // scenario/contender -> msgs/s per round
	for round := range rounds {
		for _, sc := range scenarios {
			for i := range contenders {
				c := contenders[(i+round)%len(contenders)] // who goes first rotates
				p, err := c.open()
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Publish(pcTopic, pcBody); err != nil { // connect, warm up
					t.Fatalf("%s: warm-up: %v", c.name, err)
				}
				if pk, ok := p.(pcNsqkit); ok {
					if pool, ok := pk.Publisher.(*nsq.ProducerPool); ok {
						pcWaitUp(t, pool, len(c.nodes))
					}
				}
				before := pcCount(t, c.nodes)
				start := time.Now()
				if err := sc.run(p, sc.msgs); err != nil {
					t.Fatalf("%s, %s: %v", c.name, sc.name, err)
				}
				elapsed := time.Since(start)
				p.Stop()
				if got := pcCount(t, c.nodes) - before; got != int64(sc.msgs) {
					t.Fatalf("%s, %s: nsqd counted %d messages, want %d", c.name, sc.name, got, sc.msgs)
				}
				pcEmpty(t, c.nodes)
				key := sc.name + "/" + c.name
				rates[key] = append(rates[key], float64(sc.msgs)/elapsed.Seconds())
			}
		}
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "median of %d rounds, 100-byte bodies, three nsqd on this machine's cores\n\n", rounds)
	fmt.Fprintf(&b, "| scenario | pool of 3 msgs/s | pool of 1 msgs/s | nsqkit Producer msgs/s | go-nsq Producer msgs/s | pool of 3 / nsqkit | pool of 1 / nsqkit | pool of 3 / go-nsq |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, sc := range scenarios {
		pool, pool1 := median(rates[sc.name+"/pool of 3"]), median(rates[sc.name+"/pool of 1"])
		one, gn := median(rates[sc.name+"/nsqkit Producer"]), median(rates[sc.name+"/go-nsq Producer"])
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.0f | %.0f | %.2fx | %.2fx | %.2fx |\n", sc.name, pool, pool1, one, gn, pool/one, pool1/one, pool/gn)
	}
	t.Log("\n" + b.String())
}

// pcWaitUp waits until the pool's n nodes are up, so the clock starts with
// every node connected.
func pcWaitUp(t testing.TB, p *nsq.ProducerPool, n int) {
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
			t.Fatalf("%d of %d nodes up", up, n)
		}
		time.Sleep(5 * time.Millisecond) // the pool offers nothing to wait on
	}
}
