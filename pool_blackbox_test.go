package nsq

// Black-box tests of the ProducerPool, written from issue 11's text and the
// package doc as an outside user would: only exported API, against real
// nsqd and nsqlookupd processes (and, where the answer must be one no real
// nsqlookupd gives, a tiny HTTP server).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// consumeAll returns every message the nodes hold for topic.
func consumeAll(t *testing.T, topic string, nodes ...*nsqdtest.Nsqd) []string {
	t.Helper()
	var out []string
	for _, n := range nodes {
		require.NoError(t, n.CreateTopic(topic))
		st, err := n.Stats(topic)
		require.NoError(t, err)
		if left := st.Depth + st.ChannelDepth; left > 0 {
			out = append(out, bodyStrings(n.Consume(t, topic, int(left), consumeTimeout))...)
		}
	}
	return out
}

// TestPoolBlackboxPublisher: code written against Producer's publishing
// methods (the Publisher interface) works unchanged on a pool: every sync
// method stores what it says on one node, Stats has every node's figures
// beside totals that add up; after Stop every method says ErrStopped and
// stores nothing, a second Stop (also concurrent) returns, Stats stays
// readable.
func TestPoolBlackboxPublisher(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 2)
	p := newTestPool(t, addrs, poolConfig(t))
	waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
	ctx := context.Background()
	use := func(pub Publisher) {
		require.NoError(t, pub.Publish("bb", []byte("p1")))
		require.NoError(t, pub.MultiPublish("bb", [][]byte{[]byte("m1"), []byte("m2")}))
		require.NoError(t, pub.DeferredPublish("bb", 0, []byte("d1")))
		require.NoError(t, pub.PublishContext(ctx, "bb", []byte("p2")))
		require.NoError(t, pub.MultiPublishContext(ctx, "bb", [][]byte{[]byte("m3")}))
		require.NoError(t, pub.DeferredPublishContext(ctx, "bb", 0, []byte("d2")))
		done := make(chan *ProducerTransaction, 1)
		require.NoError(t, pub.TryPublishAsync("bb", []byte("t1"), done, "try"))
		tx := <-done
		require.NoError(t, tx.Error)
		assert.Equal(t, []any{"try"}, tx.Args)
		require.NoError(t, pub.Flush(ctx))
	}
	use(p)

	// An async result's room is released just after it is sent.
	s := waitPool(t, p, 5*time.Second, "nothing pending", func(s ProducerPoolStats) bool { return s.Pending == 0 })
	require.Len(t, s.Nodes, 2)
	var sum uint64
	for _, n := range s.Nodes {
		assert.Contains(t, addrs, n.Addr)
		assert.Equal(t, "up", n.State)
		assert.Zero(t, n.Pending)
		assert.Zero(t, n.UnknownOutcome)
		assert.Zero(t, n.NeverSent)
		assert.Zero(t, n.Rerouted)
		assert.NoError(t, n.LastError)
		assert.Equal(t, n.Published, n.Producer.Published, "the node's figure and its Producer's")
		sum += n.Published
	}
	assert.Equal(t, uint64(8), s.Published)
	assert.Equal(t, s.Published, sum)
	assert.Equal(t, uint64(len("p1m1m2d1p2m3d2t1")), s.PublishedBytes)
	assert.Zero(t, s.Queued)
	assert.ElementsMatch(t, []string{"p1", "m1", "m2", "d1", "p2", "m3", "d2", "t1"}, consumeAll(t, "bb", nodes...))

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(p.Stop)
	}
	within(t, 10*time.Second, "two concurrent Stops", wg.Wait)
	within(t, time.Second, "a third Stop", p.Stop)

	done := make(chan *ProducerTransaction, 1)
	b := []byte("late")
	for name, err := range map[string]error{
		"Publish":                     p.Publish("bb", b),
		"MultiPublish":                p.MultiPublish("bb", [][]byte{b}),
		"DeferredPublish":             p.DeferredPublish("bb", 0, b),
		"PublishContext":              p.PublishContext(ctx, "bb", b),
		"MultiPublishContext":         p.MultiPublishContext(ctx, "bb", [][]byte{b}),
		"DeferredPublishContext":      p.DeferredPublishContext(ctx, "bb", 0, b),
		"PublishAsync":                p.PublishAsync("bb", b, done),
		"MultiPublishAsync":           p.MultiPublishAsync("bb", [][]byte{b}, done),
		"DeferredPublishAsync":        p.DeferredPublishAsync("bb", 0, b, done),
		"PublishAsyncContext":         p.PublishAsyncContext(ctx, "bb", b, done),
		"MultiPublishAsyncContext":    p.MultiPublishAsyncContext(ctx, "bb", [][]byte{b}, done),
		"DeferredPublishAsyncContext": p.DeferredPublishAsyncContext(ctx, "bb", 0, b, done),
		"TryPublishAsync":             p.TryPublishAsync("bb", b, done),
		"PublishByKey":                p.PublishByKey("k", "bb", b),
		"PublishAsyncByKey":           p.PublishAsyncByKey("k", "bb", b, done),
		"Flush":                       p.Flush(ctx),
		"ConnectToNSQLookupd":         p.ConnectToNSQLookupd("127.0.0.1:4161"),
		"ConnectToNSQLookupds":        p.ConnectToNSQLookupds([]string{"127.0.0.1:4161"}),
	} {
		assert.Equal(t, ErrStopped, err, name)
	}
	p.SetLogger(nil, LogLevelInfo) // after Stop: harmless
	p.SetLoggerLevel(LogLevelError)
	p.SetLoggerForLevel(nil, LogLevelWarning)
	select {
	case tx := <-done:
		t.Fatalf("a result for a publish refused after Stop: %+v", tx)
	default:
	}
	s = p.Stats()
	assert.Equal(t, uint64(8), s.Published, "the totals stay after Stop")
	assert.Empty(t, s.Nodes)
	assert.ElementsMatch(t, []string{}, consumeAll(t, "bb", nodes...), "nothing published after Stop")
}

// TestPoolBlackboxNew: NewProducerPool's arguments. A nil config or an
// empty address is refused; duplicate addresses make one node; an address
// nothing listens on, or that is not an address at all, makes a node that
// is down, and a publish fails promptly with ErrNeverSent naming why.
func TestPoolBlackboxNew(t *testing.T) {
	parallel(t)
	_, err := NewProducerPool([]string{"127.0.0.1:4150"}, nil)
	assert.Error(t, err)
	_, err = NewProducerPool([]string{"127.0.0.1:4150", ""}, NewConfig())
	assert.Error(t, err)

	_, addrs := startNodes(t, 1)
	p := newTestPool(t, []string{addrs[0], addrs[0], addrs[0]}, poolConfig(t))
	require.NoError(t, p.Publish("new", []byte("x")))
	s := p.Stats()
	require.Len(t, s.Nodes, 1, "duplicates make one node")
	assert.Equal(t, addrs[0], s.Nodes[0].Addr)
	assert.Equal(t, uint64(1), s.Nodes[0].Published)

	cfg := poolConfig(t)
	bad := newTestPool(t, []string{"no-port-here", closedAddr(t)}, cfg)
	within(t, cfg.DialTimeout+cfg.MaxReconnectBackoff+5*time.Second, "a publish with no node reachable", func() {
		err := bad.Publish("new", []byte("x"))
		assert.ErrorIs(t, err, ErrNeverSent)
	})
	for _, n := range bad.Stats().Nodes {
		assert.Equal(t, "down", n.State, n.Addr)
		assert.Error(t, n.LastError, n.Addr)
	}
}

// TestPoolBlackboxAllDownEveryKind: with every node unreachable each sync
// kind, PublishByKey included, fails with ErrNeverSent and never hangs,
// and nothing is left pending.
func TestPoolBlackboxAllDownEveryKind(t *testing.T) {
	parallel(t)
	cfg := poolConfig(t)
	p := newTestPool(t, []string{closedAddr(t), closedAddr(t)}, cfg)
	guard := cfg.DialTimeout + cfg.MaxReconnectBackoff + 5*time.Second // generous: parallel tests share the CPU
	for name, call := range map[string]func() error{
		"Publish":         func() error { return p.Publish("down", []byte("x")) },
		"MultiPublish":    func() error { return p.MultiPublish("down", [][]byte{[]byte("x"), []byte("y")}) },
		"DeferredPublish": func() error { return p.DeferredPublish("down", time.Second, []byte("x")) },
		"PublishByKey":    func() error { return p.PublishByKey("k", "down", []byte("x")) },
	} {
		within(t, guard, name, func() {
			err := call()
			assert.ErrorIs(t, err, ErrNeverSent, name)
			assert.NotErrorIs(t, err, ErrUnknownOutcome, name)
		})
	}
	done := make(chan *ProducerTransaction, 1)
	require.NoError(t, p.PublishAsyncByKey("k", "down", []byte("x"), done, "bykey"))
	within(t, guard, "PublishAsyncByKey's result", func() {
		tx := <-done
		assert.ErrorIs(t, tx.Error, ErrNeverSent)
		assert.Equal(t, []any{"bykey"}, tx.Args)
	})
	// An async result's room is released just after it is sent (as a
	// Producer's is): Pending reaches zero a moment after the result.
	s := waitPool(t, p, 5*time.Second, "nothing pending", func(s ProducerPoolStats) bool { return s.Pending == 0 })
	assert.Equal(t, uint64(6), s.NeverSent, "messages: 1+2+1+1+1")
	assert.Zero(t, s.Published)
}

// TestPoolBlackboxUnknownNotMoved: a sync PUB written to a node whose
// connection then dies unanswered ends ErrUnknownOutcome: it is not sent to
// the other node (it may be stored on the first), and counts as unknown.
func TestPoolBlackboxUnknownNotMoved(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 1)
	read := make(chan struct{})
	fake := fakeNode(t, func(c *fakensqd.Conn) {
		c.ExpectPublish()
		close(read)
		c.Close()
	})
	p := newTestPool(t, []string{fake.Addr(), addrs[0]}, poolConfig(t))
	waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
	// The pool prefers the node holding least; both hold nothing, so keep
	// publishing until one lands on the fake.
	var err error
	for i := 0; i < 100; i++ {
		err = p.Publish("unknown", []byte(fmt.Sprint(i)))
		if err != nil {
			break
		}
	}
	recvWithin(t, (<-chan struct{})(read), "the fake reading a publish")
	assert.ErrorIs(t, err, ErrUnknownOutcome)
	assert.NotErrorIs(t, err, ErrNeverSent)
	s := p.Stats()
	assert.Zero(t, s.Rerouted)
	assert.Equal(t, uint64(1), s.UnknownOutcome)
	assert.Equal(t, int64(s.Published), topicCount(t, nodes[0], "unknown"), "the unknown publish was not sent to the real node")
	fake.Wait()
}

// blockingLookupd is an nsqlookupd that accepts connections and never
// answers until the test ends.
func blockingLookupd(t *testing.T) string {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		close(release)
		srv.Close()
	})
	return srv.Listener.Addr().String()
}

// TestPoolLookupdSilent: a pool whose only nsqlookupd accepts the
// connection and never answers (an overloaded or stopped lookupd) knows no
// node; a publish must still fail promptly with ErrNeverSent (within
// dial_timeout plus the backoff cap), not wait for lookupd_poll_timeout.
func TestPoolLookupdSilent(t *testing.T) {
	parallel(t)
	// The first poll's round would end at the next poll, 10s on.
	cfg := poolConfig(t, "lookupd_poll_timeout", 30*time.Second, "lookupd_poll_interval", 10*time.Second)
	p := newTestPool(t, nil, cfg)
	require.NoError(t, p.ConnectToNSQLookupd(blockingLookupd(t)))
	// A context ends the wait for the first poll, as any wait for a node.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	within(t, 3*time.Second, "PublishContext with a silent nsqlookupd", func() {
		err := p.PublishContext(ctx, "silent", []byte("x"))
		assert.ErrorIs(t, err, ErrNeverSent)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
	within(t, cfg.DialTimeout+cfg.MaxReconnectBackoff+3*time.Second, "Publish with a silent nsqlookupd", func() {
		err := p.Publish("silent", []byte("x"))
		assert.ErrorIs(t, err, ErrNeverSent)
	})
	done := make(chan *ProducerTransaction, 1)
	require.NoError(t, p.PublishAsync("silent", []byte("x"), done))
	within(t, cfg.DialTimeout+cfg.MaxReconnectBackoff+3*time.Second, "PublishAsync's result with a silent nsqlookupd", func() {
		assert.ErrorIs(t, (<-done).Error, ErrNeverSent)
	})
	within(t, 3*time.Second, "Stop with a query to a silent nsqlookupd in flight", p.Stop)
}

// TestPoolLookupdAddress: ConnectToNSQLookupd refuses what is not an
// nsqlookupd HTTP address, at the call.
func TestPoolLookupdAddress(t *testing.T) {
	p := newTestPool(t, nil, poolConfig(t))
	for _, bad := range []string{"", "http://", "ftp://127.0.0.1:4161", "http://[::1"} {
		assert.Error(t, p.ConnectToNSQLookupd(bad), "%q", bad)
		assert.Error(t, p.ConnectToNSQLookupds([]string{bad}), "%q", bad)
	}
	assert.Equal(t, "ProducerPool[]", p.String())
}

// TestPoolLookupdOneSilent: of two nsqlookupd, the first never answers;
// the nodes the second lists are used at once, not after the first's
// lookupd_poll_timeout, and the list is refreshed every poll interval.
func TestPoolLookupdOneSilent(t *testing.T) {
	parallel(t)
	lk := nsqdtest.StartLookupd(t)
	reg := []string{"--lookupd-tcp-address=" + lk.TCPAddr(), "--broadcast-address=127.0.0.1"}
	nodes, _ := startNodes(t, 1, reg...)
	cfg := poolConfig(t, "lookupd_poll_timeout", 30*time.Second)
	p := newTestPool(t, nil, cfg)
	require.NoError(t, p.ConnectToNSQLookupds([]string{blockingLookupd(t), lk.HTTPAddr()}))
	// nsqd registers with nsqlookupd shortly after it starts.
	waitPool(t, p, 10*time.Second, "the node found through the answering nsqlookupd", func(s ProducerPoolStats) bool { return upNodes(s) == 1 })
	require.NoError(t, p.Publish("onesilent", []byte("x")))
	// A second node registering later is picked up within a few polls.
	second := nsqdtest.Start(t, reg...)
	nodes = append(nodes, second)
	waitPool(t, p, 10*time.Second, "the second node found", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
	assert.Len(t, consumeAll(t, "onesilent", nodes...), 1)
}

// TestPoolByKeyTombstone: a keyed publish avoids a node that tombstoned
// its topic while another node can take it, as every other publish does
// (issue 11: "skips a node for a topic it has tombstoned").
func TestPoolByKeyTombstone(t *testing.T) {
	parallel(t)
	_, addrs := startNodes(t, 2)
	a, b := addrs[0], addrs[1]
	_, lookupdAddr := startFakeLookupd(t, func() (int, string) {
		return 200, fmt.Sprintf(`{"producers":[%s,%s]}`,
			lookupdNodeJSON(a, map[string]bool{"tk": true}), lookupdNodeJSON(b, nil))
	})
	p := newTestPool(t, nil, poolConfig(t))
	require.NoError(t, p.ConnectToNSQLookupd(lookupdAddr))
	waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
	const keys = 40
	done := make(chan *ProducerTransaction, keys)
	for k := range keys {
		require.NoError(t, p.PublishByKey(fmt.Sprint("key", k), "tk", []byte("x")))
		require.NoError(t, p.PublishAsyncByKey(fmt.Sprint("key", k), "tk", []byte("y"), done))
	}
	for range keys {
		require.NoError(t, (<-done).Error)
	}
	nodeA := func() PoolNodeStats {
		for _, n := range p.Stats().Nodes {
			if n.Addr == a {
				return n
			}
		}
		t.Fatalf("node %s not in the pool", a)
		return PoolNodeStats{}
	}
	assert.Zero(t, nodeA().Published, "node %s took keyed publishes of a topic it tombstoned", a)
	// The same keys on a topic nobody tombstoned spread over both nodes.
	for k := range keys {
		require.NoError(t, p.PublishByKey(fmt.Sprint("key", k), "other", []byte("x")))
	}
	assert.NotZero(t, nodeA().Published, "the keys did not spread over both nodes")
}

// TestPoolStopNoHTTPGoroutine: once Stop returns no goroutine of the pool
// is left, the nsqlookupd client's keep-alive connections included (a
// user checking with goleak after Stop sees every goroutine).
//
// Sequential: it sees every goroutine of the process.
func TestPoolStopNoHTTPGoroutine(t *testing.T) {
	lk := nsqdtest.StartLookupd(t)
	reg := []string{"--lookupd-tcp-address=" + lk.TCPAddr(), "--broadcast-address=127.0.0.1"}
	startNodes(t, 1, reg...)
	before := goleak.IgnoreCurrent()
	p, err := NewProducerPool(nil, poolConfig(t))
	require.NoError(t, err)
	p.SetLogger(&testLogger{t: t}, LogLevelInfo)
	require.NoError(t, p.ConnectToNSQLookupd(lk.HTTPAddr()))
	waitPool(t, p, 10*time.Second, "the node found", func(s ProducerPoolStats) bool { return upNodes(s) == 1 })
	require.NoError(t, p.Publish("leak", []byte("x")))
	p.Stop()
	goleak.VerifyNone(t, before)
}

// TestPoolByKeyMixedOrder: PublishByKey's documented guarantee, that one
// key's publishes, PublishAsyncByKey's among them, are stored in the order
// they are made: a goroutine alternating async and sync publishes of one
// key finds them stored in that order.
func TestPoolByKeyMixedOrder(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 2)
	p := newTestPool(t, addrs, poolConfig(t))
	waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
	const n = 400
	done := make(chan *ProducerTransaction, n)
	for i := 0; i < n; i += 4 {
		for j := range 3 {
			require.NoError(t, p.PublishAsyncByKey("mixed", "mixed", []byte(fmt.Sprint(i+j)), done, i+j))
		}
		require.NoError(t, p.PublishByKey("mixed", "mixed", []byte(fmt.Sprint(i+3))))
	}
	next := 0
	for range 3 * n / 4 {
		tx := <-done
		require.NoError(t, tx.Error)
		i := tx.Args[0].(int)
		assert.Equal(t, next, i, "async results of one key out of order")
		next = i + 1
		if next%4 == 3 {
			next++
		}
	}
	got := consumeAll(t, "mixed", nodes...)
	require.Len(t, got, n)
	for i, b := range got {
		if b != fmt.Sprint(i) {
			t.Fatalf("stored out of order: position %d holds %s (around it: %v)", i, b, got[max(0, i-4):min(n, i+4)])
		}
	}
}

// TestPoolBadInputMidStream: in an async stream over two nodes, input the
// pool can check is refused at the call, and a body over nsqd's
// --max-msg-size (which the pool cannot know) fails alone with nsqd's
// refusal, not retried on the other node; every other publish has a true
// outcome, none is stored twice, none ends never sent.
func TestPoolBadInputMidStream(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 2, "--max-msg-size=64")
	p := newTestPool(t, addrs, poolConfig(t, "max_body_size", 4096))
	waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
	const total = 2000
	done := make(chan *ProducerTransaction, total)
	l := newLedger()
	refusedAtCall := 0
	for i := range total {
		body := fmt.Sprintf("b-%d", i)
		switch i {
		case 500:
			assert.ErrorIs(t, p.PublishAsync("bad topic", []byte(body), done, body), ErrInvalidTopic)
			refusedAtCall++
		case 700:
			assert.ErrorIs(t, p.PublishAsync("badinput", nil, done, body), ErrEmptyBody)
			refusedAtCall++
		case 900:
			assert.ErrorIs(t, p.MultiPublishAsync("badinput", [][]byte{make([]byte, 5000)}, done, body), ErrTooLarge)
			refusedAtCall++
		case 1000:
			// Over nsqd's limit: only nsqd can say so.
			require.NoError(t, p.PublishAsync("badinput", []byte(body+string(make([]byte, 100))), done, "big"))
		default:
			require.NoError(t, p.PublishAsync("badinput", []byte(body), done, body))
		}
	}
	var bigErr error
	for range total - refusedAtCall {
		tx := <-done
		if tx.Args[0] == "big" {
			bigErr = tx.Error
			continue
		}
		l.record(t, tx.Error, tx.Args[0].(string))
	}
	require.NoError(t, p.Flush(context.Background()))
	var perr ErrProtocol
	if errors.As(bigErr, &perr) {
		assert.Equal(t, "E_BAD_MESSAGE", perr.Code())
	} else {
		// nsqd's reset overtook its error frame: nobody can tell.
		assert.ErrorIs(t, bigErr, ErrUnknownOutcome)
	}
	assert.NotErrorIs(t, bigErr, ErrNeverSent)
	s := p.Stats()
	assert.Zero(t, s.Rerouted, "nothing moved: every node was up")
	assert.Equal(t, uint64(refusedAtCall), s.Refused)
	l.check(t, "badinput", nodes...)
	assert.Zero(t, l.count()["never"])
}

// TestPoolTombstoneAsyncStream: a node that tombstoned a topic takes none
// of a fast async stream to it while another node is up, also when the
// other node's window is full: the pool waits for room rather than
// publishing where consumers of the topic are being drained away.
func TestPoolTombstoneAsyncStream(t *testing.T) {
	parallel(t)
	_, addrs := startNodes(t, 2)
	a, b := addrs[0], addrs[1]
	_, lookupdAddr := startFakeLookupd(t, func() (int, string) {
		return 200, fmt.Sprintf(`{"producers":[%s,%s]}`,
			lookupdNodeJSON(a, map[string]bool{"tombs": true}), lookupdNodeJSON(b, nil))
	})
	p := newTestPool(t, nil, poolConfig(t))
	require.NoError(t, p.ConnectToNSQLookupd(lookupdAddr))
	waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
	const total = 20000
	done := make(chan *ProducerTransaction, total)
	for i := range total {
		require.NoError(t, p.PublishAsync("tombs", []byte(fmt.Sprint(i)), done))
	}
	for range total {
		require.NoError(t, (<-done).Error)
	}
	for _, n := range p.Stats().Nodes {
		if n.Addr == a {
			assert.Zero(t, n.Published, "the node that tombstoned the topic took publishes")
		} else {
			assert.Equal(t, uint64(total), n.Published)
		}
	}
}

// TestPoolMixedCallers: sync, sync-with-a-short-context, async and keyed
// callers at once over three nodes: every publish completes exactly once
// with a true outcome (every ok stored once, nothing never-sent stored),
// and Stop leaves nothing pending.
func TestPoolMixedCallers(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 3)
	p := newTestPool(t, addrs, poolConfig(t))
	waitPool(t, p, 5*time.Second, "three nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 3 })
	l := newLedger()
	done := make(chan *ProducerTransaction, 4096)
	var results sync.WaitGroup
	results.Go(func() {
		for tx := range done {
			l.record(t, tx.Error, tx.Args[0].(string))
		}
	})
	const goroutines, each = 8, 300
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			key := fmt.Sprint("g", g)
			for i := range each {
				body := fmt.Sprintf("%s-%04d", key, i)
				switch i % 5 {
				case 0:
					l.record(t, p.PublishByKey(key, "mixedcallers", []byte(body)), body)
				case 1:
					require.NoError(t, p.PublishAsyncByKey(key, "mixedcallers", []byte(body), done, body))
				case 2:
					l.record(t, p.Publish("mixedcallers", []byte(body)), body)
				case 3:
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%7)*50*time.Microsecond)
					err := p.PublishContext(ctx, "mixedcallers", []byte(body))
					cancel()
					if err != nil && !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("PublishContext: %v", err)
					}
					if err != nil && !errors.Is(err, ErrNeverSent) && !errors.Is(err, ErrUnknownOutcome) {
						// ctx ended before the call: not accepted, as
						// with a Producer (nothing is sent).
						err = neverSentf(err)
					}
					l.record(t, err, body)
				case 4:
					require.NoError(t, p.PublishAsync("mixedcallers", []byte(body), done, body))
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, p.Flush(context.Background()))
	within(t, 10*time.Second, "Stop", p.Stop)
	close(done)
	results.Wait()
	count := l.count()
	assert.Equal(t, goroutines*each, count["ok"]+count["never"]+count["unknown"])
	assert.Zero(t, p.Stats().Pending)
	l.check(t, "mixedcallers", nodes...)
}

// TestPoolStopPausedNode: Stop with a node that stopped answering
// (SIGSTOP) while it holds async publishes returns within its documented
// bound (stop_timeout for the pool, then stop_timeout for the node's
// Producer), and what the paused node held ends unknown, never ok, while
// everything the other node took is ok.
func TestPoolStopPausedNode(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 2)
	const stopTimeout = 300 * time.Millisecond
	p := newTestPool(t, addrs, poolConfig(t, "stop_timeout", stopTimeout))
	waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
	require.NoError(t, nodes[0].Pause())
	t.Cleanup(func() { nodes[0].Resume() })
	const total = 3000
	done := make(chan *ProducerTransaction, total)
	l := newLedger()
	for i := range total {
		body := fmt.Sprint("s-", i)
		require.NoError(t, p.PublishAsync("stoppaused", []byte(body), done, body))
	}
	waitPool(t, p, 5*time.Second, "the paused node holding publishes", func(s ProducerPoolStats) bool {
		for _, n := range s.Nodes {
			if n.Addr == addrs[0] && n.Pending > 0 {
				return true
			}
		}
		return false
	})
	start := time.Now()
	within(t, 2*stopTimeout+3*time.Second, "Stop", p.Stop)
	t.Logf("Stop took %s", time.Since(start))
	for range total {
		tx := <-done
		l.record(t, tx.Error, tx.Args[0].(string))
	}
	require.NoError(t, nodes[0].Resume())
	count := l.count()
	t.Logf("outcomes %v", count)
	assert.Positive(t, count["unknown"], "what the paused node held")
	assert.Equal(t, total, count["ok"]+count["unknown"]+count["never"])
	l.check(t, "stoppaused", nodes...)
}

// TestPoolLargePublishes: publishes larger than a node's window (3 ×
// max_batch_bytes) go through a pool as through a Producer: a 4 MiB MPUB
// and a 900 KiB PUB, sync and async, beside a stream of small ones.
func TestPoolLargePublishes(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 2)
	p := newTestPool(t, addrs, poolConfig(t, "max_batch_bytes", 64<<10))
	waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
	big := make([][]byte, 64)
	for i := range big {
		big[i] = make([]byte, 64<<10)
		big[i][0] = byte('a' + i%26)
	}
	done := make(chan *ProducerTransaction, 2000)
	for i := range 1000 {
		require.NoError(t, p.PublishAsync("large", []byte(fmt.Sprint(i)), done))
	}
	require.NoError(t, p.MultiPublishAsync("large", big, done))
	require.NoError(t, p.MultiPublish("large", big))
	require.NoError(t, p.Publish("large", make([]byte, 900<<10)))
	require.NoError(t, p.PublishAsync("large", make([]byte, 900<<10), done))
	for range 1002 {
		require.NoError(t, (<-done).Error)
	}
	require.NoError(t, p.Flush(context.Background()))
	assert.Equal(t, uint64(1000+64+64+2), p.Stats().Published)
	var stored int64
	for _, n := range nodes {
		stored += topicCount(t, n, "large")
	}
	assert.Equal(t, int64(1000+64+64+2), stored)
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestPoolSlogLogger: a pool's SetLogger takes an SlogLogger as a
// Producer's does, and its nodes' records carry their own producer id and
// nsqd address as attributes, as a Producer's records do (not "nsqd=pool",
// not bare text).
func TestPoolSlogLogger(t *testing.T) {
	var buf lockedBuffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	addr := closedAddr(t)
	p, err := NewProducerPool([]string{addr}, poolConfig(t))
	require.NoError(t, err)
	p.SetLogger(NewSlogLogger(l), LogLevelInfo)
	assert.ErrorIs(t, p.Publish("slog", []byte("x")), ErrNeverSent)
	p.Stop()
	requirePoolNoLeaks(t)
	var node, pool []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.Contains(line, "nsqd=pool") {
			pool = append(pool, line)
		} else {
			node = append(node, line)
		}
	}
	require.NotEmpty(t, pool, buf.String())
	require.NotEmpty(t, node, buf.String())
	assert.Regexp(t, `^level=INFO msg="\(`+regexp.QuoteMeta(addr)+`\) connecting to nsqd" producer=[0-9]+ nsqd=`+regexp.QuoteMeta(addr)+`$`, node[0])
	for _, line := range node {
		assert.Contains(t, line, " nsqd="+addr, "a node's record without its address")
	}
}

// wrappedTransport is an http.RoundTripper that is not an *http.Transport,
// as instrumentation libraries install in http.DefaultTransport.
type wrappedTransport struct {
	http.RoundTripper
	trips *atomic.Int64
}

func (w wrappedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	w.trips.Add(1)
	return w.RoundTripper.RoundTrip(r)
}

// TestPoolLookupdWrappedDefaultTransport: a program that replaced
// http.DefaultTransport with a wrapper can still use nsqlookupd with a
// pool (the pool's polling must not assume the default's type), through
// its wrapper.
//
// Sequential: it changes http.DefaultTransport.
func TestPoolLookupdWrappedDefaultTransport(t *testing.T) {
	_, addrs := startNodes(t, 1)
	_, lookupdAddr := startFakeLookupd(t, func() (int, string) {
		return 200, fmt.Sprintf(`{"producers":[%s]}`, lookupdNodeJSON(addrs[0], nil))
	})
	saved := http.DefaultTransport
	var trips atomic.Int64
	http.DefaultTransport = wrappedTransport{saved, &trips}
	defer func() { http.DefaultTransport = saved }()
	p := newTestPool(t, nil, poolConfig(t))
	require.NoError(t, p.ConnectToNSQLookupd(lookupdAddr))
	require.NoError(t, p.Publish("wrapped", []byte("x")))
	p.Stop()
	assert.Positive(t, trips.Load(), "the program's transport was not used")
}

// TestPoolKillSyncCallers: SIGKILL one of three nodes (durable, so that
// what it answered OK to survives) while 8 goroutines publish sync: no
// publish ends never sent (what the dead node could not send moves), what
// it held ends unknown or ok, every ok is stored once.
func TestPoolKillSyncCallers(t *testing.T) {
	parallel(t)
	durable := nsqdtest.Start(t, "--mem-queue-size=0", "--sync-every=1")
	others, addrs := startNodes(t, 2)
	nodes := append([]*nsqdtest.Nsqd{durable}, others...)
	addrs = append([]string{durable.TCPAddr()}, addrs...)
	p := newTestPool(t, addrs, poolConfig(t))
	waitPool(t, p, 5*time.Second, "three nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 3 })
	l := newLedger()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf("ks-%d-%d", g, i)
				l.record(t, p.Publish("killsync", []byte(body)), body)
			}
		})
	}
	l.waitResults(t, 300)
	nodes[0].Kill()
	l.mu.Lock()
	sofar := l.results
	l.mu.Unlock()
	l.waitResults(t, sofar+1500)
	close(stop)
	wg.Wait()
	nodes[0].Restart()
	count := l.count()
	assert.Zero(t, count["never"], "a publish ended never sent while two nodes were up")
	assert.LessOrEqual(t, count["unknown"], 8, "more unknown than the 8 publishes in flight")
	l.check(t, "killsync", nodes...)
}

// TestPoolAllNodesRemoved: when nsqlookupd stops listing the only node, a
// publish made while that node is leaving (its Producer still waits for
// what it holds) fails with ErrNeverSent once no node is left, never
// hangs.
func TestPoolAllNodesRemoved(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 1)
	listed := func() (int, string) {
		return 200, fmt.Sprintf(`{"producers":[%s]}`, lookupdNodeJSON(addrs[0], nil))
	}
	f, lookupdAddr := startFakeLookupd(t, listed)
	cfg := poolConfig(t, "stop_timeout", time.Second, "read_timeout", 30*time.Second, "heartbeat_interval", 10*time.Second)
	p := newTestPool(t, nil, cfg)
	require.NoError(t, p.ConnectToNSQLookupd(lookupdAddr))
	require.NoError(t, p.Publish("removed", []byte("x")))
	// The node stops answering, holding an async publish: leaving, its
	// Producer waits stop_timeout for the answer.
	require.NoError(t, nodes[0].Pause())
	t.Cleanup(func() { nodes[0].Resume() })
	done := make(chan *ProducerTransaction, 2)
	require.NoError(t, p.PublishAsync("removed", []byte("held"), done, "held"))
	waitPool(t, p, 5*time.Second, "the node holding the publish", func(s ProducerPoolStats) bool {
		return len(s.Nodes) == 1 && s.Nodes[0].Pending == 1
	})
	f.set(func() (int, string) { return 200, `{"producers":[]}` })
	waitPool(t, p, 5*time.Second, "the node leaving", func(s ProducerPoolStats) bool {
		return len(s.Nodes) == 1 && s.Nodes[0].State == "removed"
	})
	within(t, cfg.StopTimeout+cfg.DialTimeout+cfg.MaxReconnectBackoff+3*time.Second, "a publish while the last node leaves", func() {
		err := p.Publish("removed", []byte("y"))
		assert.ErrorIs(t, err, ErrNeverSent)
	})
	tx := <-done
	assert.ErrorIs(t, tx.Error, ErrUnknownOutcome, "what the paused node held")
}

// TestPoolSlowDoneChanFull: as with a Producer, a doneChan nobody reads
// holds back only its own publishers once max_pending results wait for it:
// publishes with another doneChan (or a sync one) still go.
func TestPoolSlowDoneChanFull(t *testing.T) {
	parallel(t)
	_, addrs := startNodes(t, 2)
	const maxPending = 100
	cfg := poolConfig(t, "max_pending", maxPending, "stop_timeout", 300*time.Millisecond)
	for name, pub := range map[string]Publisher{
		"Producer":     newTestProducer(t, addrs[0], cfg),
		"ProducerPool": newTestPool(t, addrs, cfg),
	} {
		slow := make(chan *ProducerTransaction) // never read
		for i := range maxPending {
			require.NoError(t, pub.PublishAsync("slowfull", []byte("x"), slow, i), name)
		}
		// Every result for slow is in; they wait for it.
		require.NoError(t, pub.Flush(context.Background()), name)
		assert.Equal(t, ErrPendingFull, pub.TryPublishAsync("slowfull", []byte("x"), slow), "%s: the slow channel's publishers wait", name)
		fast := make(chan *ProducerTransaction, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := pub.PublishAsyncContext(ctx, "slowfull", []byte("y"), fast)
		cancel()
		if assert.NoError(t, err, "%s: another channel's publisher waited for the slow one", name) {
			assert.NoError(t, (<-fast).Error, name)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
		assert.NoError(t, pub.PublishContext(ctx, "slowfull", []byte("z")), "%s: a sync publisher waited for the slow channel", name)
		cancel()
	}
}

// TestPoolProducerParity: the same calls through Publisher on a Producer
// and on a pool over the same nsqd give the same outcomes: refusals at the
// call (same sentinel errors), ok publishes, results with their Args, no
// result for a nil doneChan, and after Stop, ErrStopped everywhere.
func TestPoolProducerParity(t *testing.T) {
	parallel(t)
	_, addrs := startNodes(t, 1)
	cfg := poolConfig(t, "max_msg_size", 100)
	long := make([]byte, 101)
	sentinels := []error{ErrInvalidTopic, ErrEmptyBody, ErrTooLarge, ErrInvalidDelay, ErrPendingFull, ErrStopped, ErrNeverSent, ErrUnknownOutcome}
	class := func(err error) string {
		if err == nil {
			return "nil"
		}
		var out []string
		for _, s := range sentinels {
			if errors.Is(err, s) {
				out = append(out, s.Error())
			}
		}
		if len(out) == 0 {
			return "other: " + err.Error()
		}
		return strings.Join(out, " & ")
	}
	ctx := context.Background()
	calls := []struct {
		name string
		call func(pub Publisher, done chan *ProducerTransaction) error
	}{
		{"Publish", func(pub Publisher, _ chan *ProducerTransaction) error { return pub.Publish("parity", []byte("x")) }},
		{"Publish ephemeral", func(pub Publisher, _ chan *ProducerTransaction) error {
			return pub.Publish("parity#ephemeral", []byte("x"))
		}},
		{"Publish bad topic", func(pub Publisher, _ chan *ProducerTransaction) error { return pub.Publish("a/b", []byte("x")) }},
		{"Publish long topic", func(pub Publisher, _ chan *ProducerTransaction) error {
			return pub.Publish(strings.Repeat("t", 65), []byte("x"))
		}},
		{"Publish empty", func(pub Publisher, _ chan *ProducerTransaction) error { return pub.Publish("parity", []byte{}) }},
		{"Publish too large", func(pub Publisher, _ chan *ProducerTransaction) error { return pub.Publish("parity", long) }},
		{"MultiPublish none", func(pub Publisher, _ chan *ProducerTransaction) error { return pub.MultiPublish("parity", [][]byte{}) }},
		{"MultiPublish one empty", func(pub Publisher, _ chan *ProducerTransaction) error {
			return pub.MultiPublish("parity", [][]byte{[]byte("a"), nil})
		}},
		{"MultiPublish one too large", func(pub Publisher, _ chan *ProducerTransaction) error {
			return pub.MultiPublish("parity", [][]byte{[]byte("a"), long})
		}},
		{"DeferredPublish negative", func(pub Publisher, _ chan *ProducerTransaction) error {
			return pub.DeferredPublish("parity", -time.Millisecond, []byte("x"))
		}},
		{"DeferredPublish over max", func(pub Publisher, _ chan *ProducerTransaction) error {
			return pub.DeferredPublish("parity", time.Hour*24*365, []byte("x"))
		}},
		{"PublishAsync bad topic", func(pub Publisher, done chan *ProducerTransaction) error {
			return pub.PublishAsync("", []byte("x"), done)
		}},
		{"MultiPublishAsync empty", func(pub Publisher, done chan *ProducerTransaction) error {
			return pub.MultiPublishAsync("parity", nil, done)
		}},
		{"DeferredPublishAsyncContext negative", func(pub Publisher, done chan *ProducerTransaction) error {
			return pub.DeferredPublishAsyncContext(ctx, "parity", -1, []byte("x"), done)
		}},
		{"PublishAsyncContext done ctx", func(pub Publisher, done chan *ProducerTransaction) error {
			c, cancel := context.WithCancel(ctx)
			cancel()
			return pub.PublishAsyncContext(c, "parity", []byte("x"), done)
		}},
		{"PublishContext done ctx", func(pub Publisher, _ chan *ProducerTransaction) error {
			c, cancel := context.WithCancel(ctx)
			cancel()
			err := pub.PublishContext(c, "parity", []byte("x"))
			if !errors.Is(err, context.Canceled) {
				return fmt.Errorf("not context.Canceled: %w", err)
			}
			return nil
		}},
		{"PublishAsync ok", func(pub Publisher, done chan *ProducerTransaction) error {
			if err := pub.PublishAsync("parity", []byte("x"), done, 1, "two"); err != nil {
				return err
			}
			tx := <-done
			if !assert.Equal(t, []any{1, "two"}, tx.Args) {
				return errors.New("args")
			}
			return tx.Error
		}},
		{"PublishAsync nil doneChan", func(pub Publisher, _ chan *ProducerTransaction) error {
			if err := pub.PublishAsync("parity", []byte("x"), nil); err != nil {
				return err
			}
			return pub.Flush(ctx)
		}},
	}
	got := map[string][]string{}
	for _, kind := range []string{"Producer", "ProducerPool"} {
		var pub Publisher
		if kind == "Producer" {
			pub = newTestProducer(t, addrs[0], cfg)
		} else {
			pub = newTestPool(t, addrs, cfg)
		}
		done := make(chan *ProducerTransaction, 4)
		for _, c := range calls {
			got[kind] = append(got[kind], c.name+": "+class(c.call(pub, done)))
		}
		pub.Stop()
		pub.Stop()
		for _, c := range calls {
			got[kind] = append(got[kind], "after Stop, "+c.name+": "+class(c.call(pub, done)))
		}
		got[kind] = append(got[kind], "after Stop, Flush: "+class(pub.Flush(ctx)))
		select {
		case tx := <-done:
			t.Errorf("%s: an extra result %+v", kind, tx)
		default:
		}
	}
	assert.Equal(t, got["Producer"], got["ProducerPool"])
	t.Logf("%s", strings.Join(got["ProducerPool"], "\n"))
}

// TestPoolLookupdAuthorization: as go-nsq's Consumer, a pool polling
// nsqlookupd sends auth_secret as a bearer token, unless
// skip_lookupd_authorization is false (the option's name is go-nsq's).
func TestPoolLookupdAuthorization(t *testing.T) {
	parallel(t)
	headers := make(chan string, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		headers <- r.Header.Get("Authorization")
		io.WriteString(w, `{"producers":[]}`)
	}))
	t.Cleanup(srv.Close)
	for _, c := range []struct {
		cfg  *Config
		want string
	}{
		{poolConfig(t), ""},
		{poolConfig(t, "auth_secret", "s3cret"), "Bearer s3cret"},
		{poolConfig(t, "auth_secret", "s3cret", "skip_lookupd_authorization", false), ""},
	} {
		p := newTestPool(t, nil, c.cfg)
		require.NoError(t, p.ConnectToNSQLookupd(srv.URL))
		select {
		case got := <-headers:
			assert.Equal(t, c.want, got)
		case <-time.After(5 * time.Second):
			t.Fatal("nsqlookupd not polled")
		}
		p.Stop()
		for len(headers) > 0 {
			assert.Equal(t, c.want, <-headers)
		}
	}
}

// TestPoolConcurrentLifecycle: ConnectToNSQLookupd, publishes, Flush,
// Stats and Stop called at once from many goroutines: every call returns
// (nil, ErrStopped, ErrNeverSent or an ok publish), Stop returns, and
// (checked by VerifyTestMain) no goroutine is left.
func TestPoolConcurrentLifecycle(t *testing.T) {
	parallel(t)
	_, addrs := startNodes(t, 1)
	_, lookupdAddr := startFakeLookupd(t, func() (int, string) {
		return 200, fmt.Sprintf(`{"producers":[%s]}`, lookupdNodeJSON(addrs[0], nil))
	})
	for round := range 10 {
		p, err := NewProducerPool(nil, poolConfig(t, "stop_timeout", time.Second))
		require.NoError(t, err)
		p.SetLogger(nil, LogLevelError)
		var wg sync.WaitGroup
		done := make(chan *ProducerTransaction, 100)
		for g := range 6 {
			wg.Go(func() {
				for i := range 10 {
					var err error
					switch (g + i + round) % 6 {
					case 0:
						err = p.ConnectToNSQLookupd(lookupdAddr)
					case 1:
						err = p.Publish("lifecycle", []byte("x"))
					case 2:
						err = p.PublishAsync("lifecycle", []byte("x"), done)
					case 3:
						err = p.Flush(context.Background())
					case 4:
						_ = p.Stats()
					case 5:
						if i == 5 {
							p.Stop()
						}
					}
					if err != nil && err != ErrStopped && !errors.Is(err, ErrNeverSent) {
						t.Errorf("round %d: %v", round, err)
					}
				}
			})
		}
		within(t, 10*time.Second, "the calls", wg.Wait)
		within(t, 5*time.Second, "Stop", p.Stop)
		assert.Zero(t, p.Stats().Pending)
		for len(done) > 0 {
			tx := <-done
			if tx.Error != nil && !errors.Is(tx.Error, ErrNeverSent) {
				t.Errorf("round %d: async %v", round, tx.Error)
			}
		}
	}
}

// TestPoolByKeyMovesOnlyItsKeys: PublishByKey's documented placement.
// When a key's node dies only its keys move (each to one node); every
// other key stays where it was; when the node returns it takes back
// exactly its own keys.
func TestPoolByKeyMovesOnlyItsKeys(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 3)
	p := newTestPool(t, addrs, poolConfig(t))
	logs := &testLogger{t: t}
	lines := logs.watch(1000)
	p.SetLogger(logs, LogLevelInfo)
	waitPool(t, p, 5*time.Second, "three nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 3 })
	const keys = 24
	// placement publishes every key once to a topic of its own for this
	// phase, and returns the node that stored each.
	placement := func(phase string, alive ...int) map[int]int {
		t.Helper()
		for k := range keys {
			require.NoError(t, p.PublishByKey(fmt.Sprint("key", k), fmt.Sprintf("rk-%s-%d", phase, k), []byte("x")), "%s key %d", phase, k)
		}
		at := map[int]int{}
		for _, ni := range alive {
			for k := range keys {
				st, err := nodes[ni].Stats(fmt.Sprintf("rk-%s-%d", phase, k))
				require.NoError(t, err)
				if st.MessageCount > 0 {
					_, dup := at[k]
					require.False(t, dup, "%s: key %d on two nodes", phase, k)
					at[k] = ni
				}
			}
		}
		require.Len(t, at, keys, phase)
		return at
	}
	before := placement("a", 0, 1, 2)
	victim := before[0]
	var others []int
	for ni := range nodes {
		if ni != victim {
			others = append(others, ni)
		}
	}
	nodes[victim].Kill()
	waitLine(t, lines, "("+addrs[victim]+") connection lost", 5*time.Second)
	during := placement("b", others...)
	for k := range keys {
		if before[k] != victim {
			assert.Equal(t, before[k], during[k], "key %d moved though its node stayed up", k)
		}
	}
	nodes[victim].Restart()
	waitPool(t, p, 10*time.Second, "the node back up", func(s ProducerPoolStats) bool { return upNodes(s) == 3 })
	after := placement("c", 0, 1, 2)
	assert.Equal(t, before, after, "the returning node did not take back exactly its keys")
}

// TestPoolNeverSentMovesEveryKind: MPUB and DPUB (sync and async) that
// never reached a node (its connection gone, reconnecting refused) move to
// the other node and are stored there once, as a PUB does.
func TestPoolNeverSentMovesEveryKind(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 1)
	nopRead := make(chan struct{})
	fake := fakeNode(t, func(c *fakensqd.Conn) { close(nopRead) })
	p := newTestPool(t, []string{fake.Addr(), addrs[0]}, poolConfig(t))
	logs := &testLogger{t: t}
	lines := logs.watch(100)
	p.SetLogger(logs, LogLevelInfo)
	waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
	recvWithin(t, (<-chan struct{})(nopRead), "the fake reading the pool's NOP")
	fake.Close()
	waitLine(t, lines, "("+fake.Addr()+") connection lost", 5*time.Second)
	// The fake's node is still up in the pool's eyes: the least loaded
	// (both hold nothing) takes the next publishes, so some go to it, fail
	// never sent, and move.
	done := make(chan *ProducerTransaction, 8)
	require.NoError(t, p.MultiPublish("moves", [][]byte{[]byte("m1"), []byte("m2")}))
	require.NoError(t, p.DeferredPublish("moves", 0, []byte("d1")))
	require.NoError(t, p.MultiPublishAsync("moves", [][]byte{[]byte("m3"), []byte("m4")}, done))
	require.NoError(t, p.DeferredPublishAsync("moves", 0, []byte("d2"), done))
	for range 2 {
		require.NoError(t, (<-done).Error)
	}
	assert.ElementsMatch(t, []string{"m1", "m2", "d1", "m3", "m4", "d2"}, consumeAll(t, "moves", nodes[0]))
	s := p.Stats()
	assert.Equal(t, uint64(6), s.Published)
	assert.Zero(t, s.NeverSent)
	assert.Zero(t, s.UnknownOutcome)
}

// TestPoolStopDuringBackoff: Stop does not wait for a down node's
// reconnect backoff (nothing waits for that node): with a 5s backoff and
// stop_timeout, Stop returns at once.
func TestPoolStopDuringBackoff(t *testing.T) {
	parallel(t)
	_, addrs := startNodes(t, 1)
	down := closedAddr(t)
	p := newTestPool(t, []string{down, addrs[0]}, poolConfig(t, "reconnect_backoff", 5*time.Second, "max_reconnect_backoff", 5*time.Second))
	require.NoError(t, p.Publish("backoff", []byte("x")))
	waitPool(t, p, 5*time.Second, "one node down, one up", func(s ProducerPoolStats) bool {
		return upNodes(s) == 1 && len(s.Nodes) == 2
	})
	within(t, 2*time.Second, "Stop", p.Stop)
}

// TestPoolLoggerLevels: SetLogger, SetLoggerLevel and SetLoggerForLevel on
// a pool govern its nodes' lines as a Producer's do: the level filters
// the nodes' lines too, and a level's own logger gets that level's lines
// (the nodes' included).
func TestPoolLoggerLevels(t *testing.T) {
	parallel(t)
	down := closedAddr(t)
	p, err := NewProducerPool([]string{down}, poolConfig(t))
	require.NoError(t, err)
	defer p.Stop()
	all := &testLogger{t: t}
	allLines := all.watch(1000)
	errs := &testLogger{t: t}
	errLines := errs.watch(1000)
	p.SetLogger(all, LogLevelWarning)
	p.SetLoggerForLevel(errs, LogLevelError)
	assert.ErrorIs(t, p.Publish("levels", []byte("x")), ErrNeverSent)
	// The node's "error connecting" (ERR) goes to errs; the pool's "is
	// down" (WRN) to all; the node's "connecting to nsqd" (INF) nowhere.
	waitLine(t, errLines, "("+down+") error connecting to nsqd", 5*time.Second)
	waitLine(t, allLines, "nsqd "+down+" is down", 5*time.Second)
	for len(allLines) > 0 {
		line := <-allLines
		assert.False(t, strings.HasPrefix(line, "INF") || strings.HasPrefix(line, "DBG"), "below the level: %s", line)
	}
	p.SetLoggerLevel(LogLevelInfo)
	waitLine(t, allLines, "("+down+") connecting to nsqd", 5*time.Second) // the next attempt, now at Info
	for len(allLines) > 0 {
		line := <-allLines
		assert.NotContains(t, line, "ERR", "an ERR line went to the Warning logger")
	}
}
