package nsq

import (
	"bytes"
	"sync"
	"testing"

	"github.com/nsqkit/go-nsq/internal/nsqdtest"
)

// The pool's benchmarks: one Producer to one nsqd against a pool over one
// and over three, for an async stream and for 64 sync goroutines. One op
// is one 100-byte message. (The side-by-side report with go-nsq is in
// bench/; see /work/wt/notes/pool-bench.md.)

var benchBody = bytes.Repeat([]byte("0123456789"), 10)

func benchPublishers(b *testing.B, run func(b *testing.B, p Publisher)) {
	var addrs []string
	for range 3 {
		addrs = append(addrs, startBenchNsqd(b))
	}
	cfg := NewConfig()
	b.Run("producer", func(b *testing.B) {
		p, err := NewProducer(addrs[0], cfg)
		if err != nil {
			b.Fatal(err)
		}
		p.SetLogger(nil, LogLevelError)
		defer p.Stop()
		run(b, p)
		b.ReportMetric(p.Stats().MeanBatchSize, "batch")
	})
	for _, n := range []int{1, 3} {
		b.Run("pool"+string(rune('0'+n)), func(b *testing.B) {
			p, err := NewProducerPool(addrs[:n], cfg)
			if err != nil {
				b.Fatal(err)
			}
			p.SetLogger(nil, LogLevelError)
			defer p.Stop()
			run(b, p)
			var batches, batched uint64
			for _, n := range p.Stats().Nodes {
				batches += n.Producer.Batches
				batched += n.Producer.BatchedMessages
			}
			b.ReportMetric(float64(batched)/float64(max(batches, 1)), "batch")
		})
	}
}

func startBenchNsqd(b *testing.B) string {
	return nsqdtest.Start(b, "--mem-queue-size=100000000").TCPAddr()
}

func BenchmarkPoolPublishAsync(b *testing.B) {
	benchPublishers(b, func(b *testing.B, p Publisher) {
		done := make(chan *ProducerTransaction, 1024)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range b.N {
				if tx := <-done; tx.Error != nil {
					b.Error(tx.Error)
				}
			}
		}()
		b.ResetTimer()
		for range b.N {
			if err := p.PublishAsync("bench", benchBody, done); err != nil {
				b.Fatal(err)
			}
		}
		wg.Wait()
	})
}

func BenchmarkPoolPublish64(b *testing.B) {
	benchPublishers(b, func(b *testing.B, p Publisher) {
		var wg sync.WaitGroup
		per := b.N/64 + 1
		b.ResetTimer()
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range per {
					if err := p.Publish("bench", benchBody); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	})
}
