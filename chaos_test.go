package nsq

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestChaos mixes sync publishers, an async stream, MultiPublish and
// DeferredPublish on one producer while a proxy cuts the connection again
// and again, then checks every message's reported outcome against what nsqd
// stored.
func TestChaos(t *testing.T) {
	parallel(t)
	n := nsqdtest.Start(t)
	proxy := nsqdtest.NewProxy(t, n.TCPAddr())
	p := newTestProducer(t, proxy.Addr(), testConfig(t, "max_pending", 256))
	const topic = "chaos"
	l := newLedger()

	var wg sync.WaitGroup
	for g := 0; g < 8; g++ { // sync publishers
		wg.Go(func() {
			for i := 0; i < 250; i++ {
				body := fmt.Sprintf("sync-%d-%d", g, i)
				l.record(t, p.Publish(topic, []byte(body)), body)
			}
		})
	}
	wg.Go(func() { // MultiPublish of 5
		for i := 0; i < 100; i++ {
			bodies := bodies(fmt.Sprintf("mpub-%d", i), 5)
			l.record(t, p.MultiPublish(topic, bodies), strs(bodies)...)
		}
	})
	wg.Go(func() { // DeferredPublish, with no delay: deferred messages would hold up the count
		for i := 0; i < 100; i++ {
			body := fmt.Sprintf("dpub-%d", i)
			l.record(t, p.DeferredPublish(topic, 0, []byte(body)), body)
		}
	})
	wg.Go(func() { // an async stream
		done := make(chan *ProducerTransaction, 64)
		const total = 3000
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for i := 0; i < total; i++ {
				tx := <-done
				l.record(t, tx.Error, tx.Args[0].(string))
			}
		}()
		for i := 0; i < total; i++ {
			body := fmt.Sprintf("async-%d", i)
			if err := p.PublishAsync(topic, []byte(body), done, body); err != nil {
				t.Errorf("PublishAsync: %v", err)
				return
			}
		}
		<-drained
	})

	// Cut the connection ten times, spread over the run. (A cut can find
	// no connection: the producer may not have reconnected yet.)
	cuts := 0
	for cut := 1; cut <= 10; cut++ {
		l.waitResults(t, cut*400)
		if proxy.Cut() > 0 {
			cuts++
		}
	}
	within(t, 60*time.Second, "the publishers", wg.Wait)

	// 2000 sync + 100 MultiPublish + 100 deferred + 3000 async results.
	require.Equal(t, 5200, l.results)
	require.Len(t, l.outcome, 2000+500+100+3000)

	l.check(t, topic, n)
	require.Positive(t, cuts)
	assert.GreaterOrEqual(t, proxy.Conns(), cuts+1, "reconnected after every cut")
}
