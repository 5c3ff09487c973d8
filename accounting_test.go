package nsq

import (
	"errors"
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

// count returns how many messages got each outcome.
func (l *ledger) count() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	count := map[string]int{}
	for _, kind := range l.outcome {
		count[kind]++
	}
	return count
}

// check takes every message the nodes hold for topic and checks the recorded
// outcomes against them: every success stored, nothing reported never sent
// stored, nothing stored twice or never published, successes <= stored <=
// successes + unknown. It returns how many messages the nodes held.
func (l *ledger) check(t *testing.T, topic string, nodes ...*nsqdtest.Nsqd) (stored int) {
	t.Helper()
	var msgs []nsqdtest.Message
	for _, n := range nodes {
		// A restarted nsqd can come back without a topic it had created
		// just before the kill (its metadata was not yet written), though
		// the messages are on disk: creating it again finds them. And it
		// can report a topic depth one short of what its disk queue holds,
		// so keep asking until topic and channel are empty.
		require.NoError(t, n.CreateTopic(topic))
		for {
			st, err := n.Stats(topic)
			require.NoError(t, err)
			left := st.Depth + st.ChannelDepth
			if left == 0 {
				break
			}
			msgs = append(msgs, n.Consume(t, topic, int(left), consumeTimeout)...)
		}
	}
	seen := map[string]int{}
	for _, m := range msgs {
		seen[string(m.Body)]++
	}
	count := l.count()
	l.mu.Lock()
	defer l.mu.Unlock()
	var lost, sentAnyway, dup, alien []string
	for body, kind := range l.outcome {
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
	t.Logf("outcomes %v; nsqd stored %d", count, len(msgs))
	assert.Empty(t, lost, "reported published, not stored")
	assert.Empty(t, sentAnyway, "reported never sent, stored")
	assert.Empty(t, dup, "stored twice")
	assert.Empty(t, alien, "stored, never published")
	assert.LessOrEqual(t, count["ok"], len(msgs))
	assert.LessOrEqual(t, len(msgs), count["ok"]+count["unknown"])
	return len(msgs)
}
