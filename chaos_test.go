package nsq

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ledger records the outcome the producer reported for each message body.
type ledger struct {
	mu       sync.Mutex
	outcome  map[string]string // body -> "ok", "unknown", "never"
	results  int
	progress chan int // the count of results, after each one (dropped when full)
}

func newLedger() *ledger {
	return &ledger{outcome: map[string]string{}, progress: make(chan int, 1<<16)}
}

// record files one result for the bodies it covered.
func (l *ledger) record(t *testing.T, err error, bodies ...string) {
	var kind string
	switch {
	case err == nil:
		kind = "ok"
	case errors.Is(err, ErrUnknownOutcome):
		kind = "unknown"
	case errors.Is(err, ErrNeverSent):
		kind = "never"
	default:
		t.Errorf("unclassified failure: %v", err)
		return
	}
	l.mu.Lock()
	for _, b := range bodies {
		if _, dup := l.outcome[b]; dup {
			t.Errorf("%s completed twice", b)
		}
		l.outcome[b] = kind
	}
	l.results++
	n := l.results
	l.mu.Unlock()
	select {
	case l.progress <- n:
	default:
	}
}

// waitResults waits until at least n results are in.
func (l *ledger) waitResults(t *testing.T, n int) {
	t.Helper()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	for {
		select {
		case got := <-l.progress:
			if got >= n {
				return
			}
		case <-timer.C:
			t.Fatalf("fewer than %d results after 30s", n)
		}
	}
}

// TestChaos mixes sync publishers, an async stream, MultiPublish and
// DeferredPublish on one producer while a proxy cuts the connection again
// and again, then checks every message's reported outcome against what nsqd
// stored.
func TestChaos(t *testing.T) {
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

	// Cut the connection ten times, spread over the run.
	for cut := 1; cut <= 10; cut++ {
		l.waitResults(t, cut*400)
		proxy.Cut()
	}
	within(t, 60*time.Second, "the publishers", wg.Wait)

	// 2000 sync + 100 MultiPublish + 100 deferred + 3000 async results.
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Equal(t, 5200, l.results)
	require.Len(t, l.outcome, 2000+500+100+3000)

	var stored []nsqdtest.Message
	for {
		st, err := n.Stats(topic)
		require.NoError(t, err)
		left := st.Depth + st.ChannelDepth
		if left == 0 {
			break
		}
		stored = append(stored, n.Consume(t, topic, int(left), consumeTimeout)...)
	}
	seen := map[string]int{}
	for _, m := range stored {
		seen[string(m.Body)]++
	}
	count := map[string]int{}
	var lost, sentAnyway, dup, alien []string
	for body, kind := range l.outcome {
		count[kind]++
		switch {
		case kind == "ok" && seen[body] == 0:
			lost = append(lost, body)
		case kind == "never" && seen[body] > 0:
			sentAnyway = append(sentAnyway, body)
		}
	}
	for body, times := range seen {
		if times > 1 {
			dup = append(dup, body)
		}
		if _, ok := l.outcome[body]; !ok {
			alien = append(alien, body)
		}
	}
	t.Logf("outcomes %v; nsqd stored %d; %d connections", count, len(stored), proxy.Conns())
	assert.Empty(t, lost, "reported published, not stored")
	assert.Empty(t, sentAnyway, "reported never sent, stored")
	assert.Empty(t, dup, "stored twice")
	assert.Empty(t, alien, "stored, never published")
	assert.LessOrEqual(t, count["ok"], len(stored))
	assert.LessOrEqual(t, len(stored), count["ok"]+count["unknown"])
	assert.GreaterOrEqual(t, proxy.Conns(), 11, "reconnected after every cut")
}
