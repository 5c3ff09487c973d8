package nsq

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Code written against Producer's publishing methods takes a pool.
var (
	_ Publisher = (*Producer)(nil)
	_ Publisher = (*ProducerPool)(nil)
)

// poolConfig is a Config for pool tests: short timeouts and backoff.
func poolConfig(t testing.TB, kv ...any) *Config {
	t.Helper()
	base := []any{"dial_timeout", 500 * time.Millisecond, "reconnect_backoff", 20 * time.Millisecond,
		"max_reconnect_backoff", 200 * time.Millisecond, "lookupd_poll_interval", 100 * time.Millisecond,
		"lookupd_poll_jitter", 0.2, "lookupd_poll_timeout", time.Second, "stop_timeout", 5 * time.Second}
	return testConfig(t, append(base, kv...)...)
}

// newTestPool makes a pool whose logs go to the test and which is stopped
// when the test ends, after which no goroutine of the package may be left
// (checked at once in a sequential test, by VerifyTestMain in a parallel
// one).
func newTestPool(t testing.TB, addrs []string, cfg *Config) *ProducerPool {
	t.Helper()
	p, err := NewProducerPool(addrs, cfg)
	require.NoError(t, err)
	p.SetLogger(&testLogger{t: t}, LogLevelInfo)
	livePools.Add(1)
	t.Cleanup(func() {
		p.Stop()
		if livePools.Add(-1) == 0 && !inParallel() {
			requirePoolNoLeaks(t)
		}
	})
	return p
}

// livePools counts the pools newTestPool made that are not stopped yet:
// the leak check runs once the last is.
var livePools atomic.Int32

// requirePoolNoLeaks fails the test if a goroutine of the pool or of any
// Producer is left.
func requirePoolNoLeaks(t testing.TB) {
	t.Helper()
	requireSequential(t, "requirePoolNoLeaks")
	deadline := time.Now().Add(5 * time.Second)
	for {
		var leaks []string
		for _, g := range strings.Split(allStacks(), "\n\n") {
			if strings.Contains(g, "nsqkit/go-nsq.(*ProducerPool)") || strings.Contains(g, "nsqkit/go-nsq.(*Producer)") ||
				strings.Contains(g, "nsqkit/go-nsq.(*Conn)") {
				leaks = append(leaks, g)
			}
		}
		if len(leaks) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines leaked:\n%s", len(leaks), strings.Join(leaks, "\n\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startNodes starts n nsqd, with args.
func startNodes(t *testing.T, n int, args ...string) ([]*nsqdtest.Nsqd, []string) {
	t.Helper()
	var nodes []*nsqdtest.Nsqd
	var addrs []string
	for range n {
		d := nsqdtest.Start(t, args...)
		nodes = append(nodes, d)
		addrs = append(addrs, d.TCPAddr())
	}
	return nodes, addrs
}

// waitPool waits until cond holds of the pool's stats.
func waitPool(t testing.TB, p *ProducerPool, d time.Duration, what string, cond func(ProducerPoolStats) bool) ProducerPoolStats {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		s := p.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; stats %+v", what, d, s)
		}
		time.Sleep(10 * time.Millisecond) // the pool's state has no signal to wait on
	}
}

func upNodes(s ProducerPoolStats) int {
	up := 0
	for _, n := range s.Nodes {
		if n.State == "up" {
			up++
		}
	}
	return up
}

// TestPoolSpreadsSync: sync publishes from many goroutines spread over
// three nodes, each storing a fair share, every one stored once.
func TestPoolSpreadsSync(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 3)
	p := newTestPool(t, addrs, poolConfig(t))
	waitPool(t, p, 5*time.Second, "three nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 3 })
	const goroutines, each = 24, 100
	l := newLedger()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				body := fmt.Sprintf("s-%d-%d", g, i)
				l.record(t, p.Publish("spread", []byte(body)), body)
			}
		}()
	}
	wg.Wait()
	s := p.Stats()
	require.Len(t, s.Nodes, 3)
	for _, n := range s.Nodes {
		t.Logf("%s: %d published", n.Addr, n.Published)
		assert.GreaterOrEqual(t, n.Published, uint64(goroutines*each/10), "node %s got too small a share", n.Addr)
	}
	assert.Equal(t, uint64(goroutines*each), s.Published)
	assert.Equal(t, goroutines*each, l.check(t, "spread", nodes...))
	assert.Equal(t, map[string]int{"ok": goroutines * each}, l.count())
}

// TestPoolSpreadsAsync: an async stream spreads over three nodes, each
// node's Producer still batching into MPUBs; results arrive once each,
// and in order per node.
func TestPoolSpreadsAsync(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 3)
	p := newTestPool(t, addrs, poolConfig(t))
	waitPool(t, p, 5*time.Second, "three nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 3 })
	const total = 30000
	done := make(chan *ProducerTransaction, 1024)
	l := newLedger()
	go func() {
		for i := range total {
			body := fmt.Sprintf("a-%d", i)
			if err := p.PublishAsync("spread_async", []byte(body), done, body); err != nil {
				t.Errorf("PublishAsync: %v", err)
			}
		}
	}()
	for range total {
		tx := <-done
		l.record(t, tx.Error, tx.Args[0].(string))
	}
	require.NoError(t, p.Flush(context.Background()))
	s := p.Stats()
	for _, n := range s.Nodes {
		t.Logf("%s: %d published, mean batch %.1f", n.Addr, n.Published, n.Producer.MeanBatchSize)
		assert.GreaterOrEqual(t, n.Published, uint64(total/10), "node %s got too small a share", n.Addr)
		assert.Greater(t, n.Producer.MeanBatchSize, 2.0, "node %s does not batch", n.Addr)
	}
	assert.Equal(t, uint64(total), s.Published)
	assert.Equal(t, int64(0), s.Pending)
	assert.Equal(t, total, l.check(t, "spread_async", nodes...))
}

// TestPoolAllDown: with every node unreachable a publish fails promptly
// with ErrNeverSent, sync and async, and never hangs.
//
// Sequential: its count of attempts a second needs the CPU when a timer
// fires, which parallel tests would contend for.
func TestPoolAllDown(t *testing.T) {
	addrs := []string{closedAddr(t), closedAddr(t)}
	cfg := poolConfig(t)
	p := newTestPool(t, addrs, cfg)
	bound := cfg.DialTimeout + cfg.MaxReconnectBackoff + 500*time.Millisecond
	for range 3 {
		start := time.Now()
		err := p.Publish("down", []byte("x"))
		assert.ErrorIs(t, err, ErrNeverSent)
		assert.ErrorIs(t, err, ErrNotConnected)
		assert.Less(t, time.Since(start), bound)
	}
	done := make(chan *ProducerTransaction, 1)
	start := time.Now()
	require.NoError(t, p.PublishAsync("down", []byte("x"), done, 7))
	tx := <-done
	assert.ErrorIs(t, tx.Error, ErrNeverSent)
	assert.Equal(t, []interface{}{7}, tx.Args)
	assert.Less(t, time.Since(start), bound)
	s := p.Stats()
	assert.Equal(t, uint64(4), s.NeverSent)
	for _, n := range s.Nodes {
		assert.Equal(t, "down", n.State)
		assert.Error(t, n.LastError)
	}
	// Never hammered: a down node is retried with backoff (at the cap of
	// 200ms, jittered to [100ms, 200ms)): at most 10 attempts a second.
	before := map[string]uint64{}
	for _, n := range s.Nodes {
		before[n.Addr] = n.Producer.ConnectFailures
	}
	time.Sleep(time.Second) // the time the attempts are counted over
	for _, n := range p.Stats().Nodes {
		tries := n.Producer.ConnectFailures - before[n.Addr]
		assert.LessOrEqual(t, tries, uint64(11), "%s was tried %d times in a second", n.Addr, tries)
		assert.GreaterOrEqual(t, tries, uint64(4), "%s was not retried", n.Addr)
	}
}

// TestPoolNoNodes: a pool with no node fails at once.
func TestPoolNoNodes(t *testing.T) {
	p := newTestPool(t, nil, poolConfig(t))
	err := p.Publish("none", []byte("x"))
	assert.ErrorIs(t, err, ErrNeverSent)
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	return addr
}

// allStacks returns every goroutine's stack.
func allStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestPoolKillDurableNode: SIGKILL one of three durable nsqd mid-burst of
// 10,000 async publishes, restart it, consume every node: every ok is
// stored, nothing twice, nothing reported never sent is stored, and with
// two nodes up no publish ends never sent.
func TestPoolKillDurableNode(t *testing.T) {
	parallel(t)
	durable := nsqdtest.Start(t, "--mem-queue-size=0", "--sync-every=1")
	others, addrs := startNodes(t, 2)
	nodes := append([]*nsqdtest.Nsqd{durable}, others...)
	addrs = append([]string{durable.TCPAddr()}, addrs...)
	p := newTestPool(t, addrs, poolConfig(t))
	waitPool(t, p, 5*time.Second, "three nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 3 })
	const total = 10000
	done := make(chan *ProducerTransaction, 1024)
	l := newLedger()
	go func() {
		for tx := range done {
			l.record(t, tx.Error, tx.Args[0].(string))
		}
	}()
	go func() {
		for i := range total {
			body := fmt.Sprintf("k-%d", i)
			if err := p.PublishAsync("kill", []byte(body), done, body); err != nil {
				t.Errorf("PublishAsync: %v", err)
			}
		}
	}()
	// Mid-burst: the durable node has answered some and holds more.
	waitPool(t, p, 10*time.Second, "the durable node publishing", func(s ProducerPoolStats) bool {
		for _, n := range s.Nodes {
			if n.Addr == addrs[0] {
				return n.Published > 200
			}
		}
		return false
	})
	durable.Kill()
	l.waitResults(t, total)
	s := p.Stats()
	for _, n := range s.Nodes {
		t.Logf("%s (%s): published %d, unknown %d, never sent %d, rerouted %d", n.Addr, n.State, n.Published, n.UnknownOutcome, n.NeverSent, n.Rerouted)
	}
	t.Logf("pool: published %d, unknown %d, never sent %d, rerouted %d", s.Published, s.UnknownOutcome, s.NeverSent, s.Rerouted)
	durable.Restart()
	l.check(t, "kill", nodes...)
	count := l.count()
	assert.Zero(t, count["never"], "a publish ended never sent while two nodes were up")
	assert.Equal(t, total, count["ok"]+count["unknown"])
	assert.LessOrEqual(t, count["unknown"], poolWindowBatches*NewConfig().MaxBatchMessages, "more unknown than one node's window")
	close(done)
}

// TestPoolPausedNode: SIGSTOP one of three nodes for three seconds while 8
// goroutines publish: publishing goes on through the others at once, what
// the paused node held ends unknown after read_timeout, never ok unless
// stored.
func TestPoolPausedNode(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 3)
	p := newTestPool(t, addrs, poolConfig(t, "read_timeout", 2*time.Second, "heartbeat_interval", time.Second))
	waitPool(t, p, 5*time.Second, "three nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 3 })
	l := newLedger()
	var okCount atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// At most one publish every 2ms each: thousands a second
			// in all, without taking every CPU from the tests running
			// beside this one.
			pace := time.NewTicker(2 * time.Millisecond)
			defer pace.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-pace.C:
				}
				body := fmt.Sprintf("p-%d-%d", g, i)
				err := p.Publish("pause", []byte(body))
				l.record(t, err, body)
				if err == nil {
					okCount.Add(1)
				}
			}
		}()
	}
	l.waitResults(t, 500)
	require.NoError(t, nodes[1].Pause())
	time.Sleep(300 * time.Millisecond) // let the paused node's window fill
	before := okCount.Load()
	time.Sleep(2500 * time.Millisecond) // the pause goes on; the others must keep publishing
	during := okCount.Load() - before
	require.NoError(t, nodes[1].Resume())
	l.mu.Lock()
	sofar := l.results
	l.mu.Unlock()
	l.waitResults(t, sofar+200)
	close(stop)
	wg.Wait()
	s := p.Stats()
	for _, n := range s.Nodes {
		t.Logf("%s (%s): published %d, unknown %d, never sent %d, rerouted %d", n.Addr, n.State, n.Published, n.UnknownOutcome, n.NeverSent, n.Rerouted)
	}
	t.Logf("ok publishes while the node was paused (2.5 s): %d; unknown in all: %d", during, s.UnknownOutcome)
	assert.Greater(t, during, int64(100), "publishing stalled while one node was paused")
	assert.LessOrEqual(t, s.UnknownOutcome, uint64(8), "more unknown than the 8 publishes in flight")
	l.check(t, "pause", nodes...)
	assert.Zero(t, l.count()["never"])
}

// TestPoolStopGraceful: Stop over three nodes waits for every answer: the
// ok count equals what the nodes hold, and nothing is left running.
func TestPoolStopGraceful(t *testing.T) {
	nodes, addrs := startNodes(t, 3)
	p := newTestPool(t, addrs, poolConfig(t))
	const total = 5000
	done := make(chan *ProducerTransaction, 64)
	l := newLedger()
	got := make(chan struct{})
	go func() {
		defer close(got)
		for range total {
			tx := <-done
			l.record(t, tx.Error, tx.Args[0].(string))
		}
	}()
	for i := range total {
		body := fmt.Sprintf("g-%d", i)
		require.NoError(t, p.PublishAsync("graceful", []byte(body), done, body))
	}
	p.Stop()
	<-got
	assert.Equal(t, ErrStopped, p.Publish("graceful", []byte("late")))
	assert.Equal(t, ErrStopped, p.Flush(context.Background()))
	requirePoolNoLeaks(t)
	assert.Equal(t, total, l.check(t, "graceful", nodes...))
	assert.Equal(t, map[string]int{"ok": total}, l.count())
	s := p.Stats()
	assert.Equal(t, uint64(total), s.Published)
	assert.Zero(t, s.Pending)
	assert.Empty(t, s.Nodes)
}

// TestPoolLookupd: a pool given only nsqlookupd finds both nodes, picks up
// a third that registers later, keeps publishing without a never-sent
// after one is killed (and removes it), and keeps its list while
// nsqlookupd is down.
func TestPoolLookupd(t *testing.T) {
	parallel(t)
	lk := nsqdtest.StartLookupd(t)
	reg := []string{"--lookupd-tcp-address=" + lk.TCPAddr(), "--broadcast-address=127.0.0.1"}
	nodes, _ := startNodes(t, 2, reg...)
	p := newTestPool(t, nil, poolConfig(t))
	require.NoError(t, p.ConnectToNSQLookupd(lk.HTTPAddr()))
	require.NoError(t, p.ConnectToNSQLookupds([]string{"http://" + lk.HTTPAddr()}), "the same lookupd again is ignored")
	publish := func(n int, prefix string) map[string]int {
		t.Helper()
		count := map[string]int{}
		for i := range n {
			err := p.Publish("lookupd", []byte(fmt.Sprintf("%s-%d", prefix, i)))
			count[outcomeOf(err)]++
		}
		return count
	}
	assert.Equal(t, map[string]int{"ok": 100}, publish(100, "a"), "the first publishes wait for nsqlookupd's answer")
	waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })

	third := nsqdtest.Start(t, reg...)
	nodes = append(nodes, third)
	waitPool(t, p, 5*time.Second, "the third node up", func(s ProducerPoolStats) bool { return upNodes(s) == 3 })
	assert.Equal(t, map[string]int{"ok": 300}, publish(300, "b"))
	s := p.Stats()
	for _, n := range s.Nodes {
		assert.NotZero(t, n.Published, "node %s took nothing", n.Addr)
	}

	logs := &testLogger{t: t}
	lines := logs.watch(1000)
	p.SetLogger(logs, LogLevelInfo)
	nodes[0].Kill()
	// Once its Producer has seen the connection drop (a publish written
	// before that ends unknown, truthfully), nothing is lost to it.
	waitLine(t, lines, "("+nodes[0].TCPAddr()+") connection lost", 5*time.Second)
	start := time.Now()
	assert.Equal(t, map[string]int{"ok": 300}, publish(300, "c"), "a killed node costs no publish")
	t.Logf("300 sync publishes after the kill: %s", time.Since(start))
	s = waitPool(t, p, 5*time.Second, "the killed node removed", func(s ProducerPoolStats) bool { return len(s.Nodes) == 2 })
	for _, n := range s.Nodes {
		assert.NotEqual(t, nodes[0].TCPAddr(), n.Addr)
	}

	lk.Kill()
	time.Sleep(10 * p.config.LookupdPollInterval) // ten polls that fail
	s = p.Stats()
	assert.Equal(t, 2, upNodes(s), "the list is kept while nsqlookupd is down")
	assert.Equal(t, map[string]int{"ok": 100}, publish(100, "d"))
}

func outcomeOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrUnknownOutcome):
		return "unknown"
	case errors.Is(err, ErrNeverSent):
		return "never"
	}
	return err.Error()
}

// fakeLookupd serves GET /nodes from a function, counting polls.
type fakeLookupd struct {
	mu     sync.Mutex
	answer func() (int, string)
	polls  chan struct{}
}

func startFakeLookupd(t *testing.T, answer func() (int, string)) (*fakeLookupd, string) {
	f := &fakeLookupd{answer: answer, polls: make(chan struct{}, 1000)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/nodes" || r.URL.RawQuery != "" {
			t.Errorf("unexpected request %s", r.URL)
		}
		assert.Equal(t, "application/vnd.nsq; version=1.0", r.Header.Get("Accept"))
		f.mu.Lock()
		code, body := f.answer()
		f.mu.Unlock()
		w.WriteHeader(code)
		io.WriteString(w, body)
		f.polls <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	return f, srv.Listener.Addr().String()
}

// set changes the answer; polls counted from now on are answered by it
// (or were in flight as it changed: waitPolls callers wait one extra).
func (f *fakeLookupd) set(answer func() (int, string)) {
	f.mu.Lock()
	f.answer = answer
	f.mu.Unlock()
	for len(f.polls) > 0 {
		<-f.polls
	}
}

// waitPolls waits for n more polls.
func (f *fakeLookupd) waitPolls(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-f.polls:
		case <-time.After(5 * time.Second):
			t.Fatal("nsqlookupd not polled")
		}
	}
}

func lookupdNodeJSON(addr string, topics map[string]bool) string {
	host, port, _ := net.SplitHostPort(addr)
	var names, tombs []string
	for topic, tomb := range topics {
		names = append(names, fmt.Sprintf("%q", topic))
		tombs = append(tombs, fmt.Sprint(tomb))
	}
	return fmt.Sprintf(`{"remote_address":"127.0.0.1:1","hostname":"h","broadcast_address":%q,"tcp_port":%s,"http_port":1,"version":"1.3.0","tombstones":[%s],"topics":[%s]}`,
		host, port, strings.Join(tombs, ","), strings.Join(names, ","))
}

// TestPoolLookupdAnswers: the pre-1.0 {"data":...} envelope is read; a
// node is skipped for a topic it tombstoned; a node missing from one answer
// stays, from two is removed; an error answer keeps the list.
func TestPoolLookupdAnswers(t *testing.T) {
	parallel(t)
	_, addrs := startNodes(t, 2)
	a, b := addrs[0], addrs[1]
	both := func() (int, string) {
		return 200, fmt.Sprintf(`{"status_code":200,"status_txt":"OK","data":{"producers":[%s,%s]}}`,
			lookupdNodeJSON(a, map[string]bool{"tomb": true, "other": false}), lookupdNodeJSON(b, nil))
	}
	f, lookupdAddr := startFakeLookupd(t, both)
	p := newTestPool(t, nil, poolConfig(t))
	require.NoError(t, p.ConnectToNSQLookupd(lookupdAddr))
	waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
	for i := range 50 {
		require.NoError(t, p.Publish("tomb", []byte(fmt.Sprint(i))))
	}
	for _, n := range p.Stats().Nodes {
		if n.Addr == a {
			assert.Zero(t, n.Published, "the node that tombstoned the topic took publishes")
		} else {
			assert.Equal(t, uint64(50), n.Published)
		}
	}

	f.set(func() (int, string) { return 500, `{"message":"INTERNAL_ERROR"}` })
	f.waitPolls(t, 5)
	assert.Len(t, p.Stats().Nodes, 2, "an error answer keeps the list")

	onlyA := func() (int, string) { return 200, fmt.Sprintf(`{"producers":[%s]}`, lookupdNodeJSON(a, nil)) }
	once := false
	f.set(func() (int, string) {
		if !once {
			once = true
			return onlyA()
		}
		return both()
	})
	f.waitPolls(t, 4)
	assert.True(t, once)
	assert.Len(t, p.Stats().Nodes, 2, "one missed answer removed a node")
	f.set(onlyA)
	f.waitPolls(t, 3)
	waitPool(t, p, 5*time.Second, "the missing node removed", func(s ProducerPoolStats) bool {
		return len(s.Nodes) == 1 && s.Nodes[0].Addr == a
	})
	require.NoError(t, p.Publish("tomb", []byte("x")), "a tombstoned node is used when no other can take the topic")
}

// fakeNode is a scripted nsqd that comes up (handshake and the pool's
// NOP) and then runs script on that connection.
func fakeNode(t *testing.T, scripts ...func(c *fakensqd.Conn)) *fakensqd.Server {
	s := fakensqd.New(t)
	for _, script := range scripts {
		s.Go(func(c *fakensqd.Conn) {
			c.Handshake(nil)
			c.Expect("NOP")
			script(c)
		})
	}
	return s
}

// TestPoolFailover: which failures move a publish to another node.
func TestPoolFailover(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 1)
	real := addrs[0]
	bothUp := func(t *testing.T, p *ProducerPool) {
		waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
	}
	nodeStats := func(p *ProducerPool, addr string) PoolNodeStats {
		for _, n := range p.Stats().Nodes {
			if n.Addr == addr {
				return n
			}
		}
		return PoolNodeStats{}
	}

	t.Run("E_PUB_FAILED moves", func(t *testing.T) {
		fake := fakeNode(t, func(c *fakensqd.Conn) {
			c.ExpectPublish()
			c.Error("E_PUB_FAILED PUB failed exiting")
			c.Close()
		})
		p := newTestPool(t, []string{fake.Addr(), real}, poolConfig(t))
		bothUp(t, p)
		before := topicCount(t, nodes[0], "failover")
		require.NoError(t, p.Publish("failover", []byte("moved")))
		assert.Equal(t, before+1, topicCount(t, nodes[0], "failover"))
		f := nodeStats(p, fake.Addr())
		assert.Equal(t, uint64(1), f.NeverSent)
		assert.Equal(t, uint64(1), f.Rerouted)
		assert.Equal(t, uint64(1), p.Stats().Rerouted)
		fake.Wait()
	})

	t.Run("E_MPUB_FAILED does not move", func(t *testing.T) {
		fake := fakeNode(t, func(c *fakensqd.Conn) {
			c.ExpectPublish()
			c.Error("E_MPUB_FAILED MPUB failed exiting")
			c.Close()
		}, func(c *fakensqd.Conn) {})
		p := newTestPool(t, []string{fake.Addr(), real}, poolConfig(t))
		bothUp(t, p)
		before := topicCount(t, nodes[0], "failover")
		err := p.MultiPublish("failover", [][]byte{[]byte("a"), []byte("b")})
		assert.ErrorIs(t, err, ErrUnknownOutcome)
		var perr ErrProtocol
		require.ErrorAs(t, err, &perr)
		assert.Equal(t, "E_MPUB_FAILED", perr.Code())
		assert.Equal(t, before, topicCount(t, nodes[0], "failover"))
		assert.Zero(t, p.Stats().Rerouted)
		assert.Equal(t, uint64(2), p.Stats().UnknownOutcome)
		fake.Wait()
	})

	t.Run("never sent moves, up to pool_max_attempts", func(t *testing.T) {
		for _, attempts := range []int{1, 3} {
			nopRead := make(chan struct{})
			fake := fakeNode(t, func(c *fakensqd.Conn) { close(nopRead) })
			p := newTestPool(t, []string{fake.Addr(), real}, poolConfig(t, "pool_max_attempts", attempts))
			logs := &testLogger{t: t}
			lines := logs.watch(100)
			p.SetLogger(logs, LogLevelInfo)
			bothUp(t, p)
			// A node is up once its NOP is written: closing the fake before
			// its script has read it would fail the script.
			recvWithin(t, (<-chan struct{})(nopRead), "the fake reading the pool's NOP")
			fake.Close() // the idle connection drops; reconnecting is refused
			waitLine(t, lines, "("+fake.Addr()+") connection lost", 5*time.Second)
			err := p.Publish("failover", []byte("x"))
			if attempts == 1 {
				assert.ErrorIs(t, err, ErrNeverSent, "one attempt: the first node's error")
			} else {
				assert.NoError(t, err, "moved to the other node")
				assert.Equal(t, uint64(1), p.Stats().Rerouted)
			}
		}
	})

	t.Run("async never sent moves, each result once", func(t *testing.T) {
		// Async publishes reach a node through its box in batches, and its
		// results settle in batches: those a node could not send (its
		// connection gone, reconnecting refused) all move to the other
		// node, and each result arrives exactly once.
		nopRead := make(chan struct{})
		fake := fakeNode(t, func(c *fakensqd.Conn) { close(nopRead) })
		p := newTestPool(t, []string{fake.Addr(), real}, poolConfig(t))
		logs := &testLogger{t: t}
		lines := logs.watch(100)
		p.SetLogger(logs, LogLevelInfo)
		bothUp(t, p)
		// A node is up once its NOP is written: closing the fake before
		// its script has read it would fail the script.
		recvWithin(t, (<-chan struct{})(nopRead), "the fake reading the pool's NOP")
		fake.Close()
		waitLine(t, lines, "("+fake.Addr()+") connection lost", 5*time.Second)
		before := topicCount(t, nodes[0], "failover-async")
		const N = 2000
		done := make(chan *ProducerTransaction, N)
		for i := range N {
			require.NoError(t, p.PublishAsync("failover-async", []byte("x"), done, i))
		}
		seen := make([]bool, N)
		for range N {
			tx := <-done
			require.NoError(t, tx.Error)
			i := tx.Args[0].(int)
			require.False(t, seen[i], "result %d delivered twice", i)
			seen[i] = true
		}
		require.NoError(t, p.Flush(context.Background()))
		select {
		case tx := <-done:
			t.Fatalf("an extra result: %v", tx.Args)
		default:
		}
		assert.Equal(t, before+N, topicCount(t, nodes[0], "failover-async"))
		f := nodeStats(p, fake.Addr())
		assert.Positive(t, f.Rerouted, "nothing went to the node that could not send")
		assert.Equal(t, f.NeverSent, f.Rerouted)
		assert.Equal(t, f.Rerouted, p.Stats().Rerouted)
		assert.Equal(t, uint64(N), p.Stats().Published)
	})

	t.Run("nsqd's refusal is not retried", func(t *testing.T) {
		small, addrs := startNodes(t, 2, "--max-msg-size=64")
		p := newTestPool(t, addrs, poolConfig(t))
		waitPool(t, p, 5*time.Second, "both nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 2 })
		err := p.Publish("failover", make([]byte, 100))
		var perr ErrProtocol
		require.ErrorAs(t, err, &perr)
		assert.Equal(t, "E_BAD_MESSAGE", perr.Code())
		s := p.Stats()
		assert.Zero(t, s.Rerouted)
		assert.Equal(t, map[string]uint64{"E_BAD_MESSAGE": 1}, s.NsqdErrors)
		assert.Zero(t, topicCount(t, small[0], "failover")+topicCount(t, small[1], "failover"))
	})
}

// TestPoolContext: a sync publish waiting for a node gives up when its
// context ends, never sent; TryPublishAsync refuses when max_pending are
// pending; Stop fails what no node took, and returns.
func TestPoolContext(t *testing.T) {
	parallel(t)
	// A node whose handshake is never answered stays connecting.
	silent := fakensqd.New(t)
	cfg := poolConfig(t, "read_timeout", 5*time.Second, "heartbeat_interval", time.Second, "max_pending", 1, "stop_timeout", 200*time.Millisecond)
	p := newTestPool(t, []string{silent.Addr()}, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.PublishContext(ctx, "ctx", []byte("x"))
	assert.ErrorIs(t, err, ErrNeverSent)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), time.Second)

	done := make(chan *ProducerTransaction, 2)
	require.NoError(t, p.TryPublishAsync("ctx", []byte("queued"), done, 1))
	assert.Equal(t, ErrPendingFull, p.TryPublishAsync("ctx", []byte("refused"), done, 2))
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	assert.ErrorIs(t, p.PublishAsyncContext(ctx2, "ctx", []byte("no room"), done, 3), context.DeadlineExceeded)
	flushCtx, cancel3 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel3()
	assert.ErrorIs(t, p.Flush(flushCtx), context.DeadlineExceeded, "Flush waits for the queued publish")

	within(t, 3*time.Second, "Stop", p.Stop)
	tx := <-done
	assert.Equal(t, []interface{}{1}, tx.Args)
	assert.ErrorIs(t, tx.Error, ErrNeverSent)
	assert.Equal(t, ErrStopped, p.PublishAsync("ctx", []byte("late"), done))
	assert.Equal(t, uint64(1), p.Stats().Refused, "ErrPendingFull counts; a context that ended does not")
}

// TestPoolInvalidInput: refused at the call, as by a Producer.
func TestPoolInvalidInput(t *testing.T) {
	p := newTestPool(t, []string{closedAddr(t)}, poolConfig(t, "max_msg_size", 10))
	assert.ErrorIs(t, p.Publish("a b", []byte("x")), ErrInvalidTopic)
	assert.ErrorIs(t, p.Publish("t", nil), ErrEmptyBody)
	assert.ErrorIs(t, p.MultiPublish("t", nil), ErrEmptyBody)
	assert.ErrorIs(t, p.MultiPublish("t", [][]byte{[]byte("ok"), make([]byte, 11)}), ErrTooLarge)
	assert.ErrorIs(t, p.DeferredPublish("t", -time.Second, []byte("x")), ErrInvalidDelay)
	assert.ErrorIs(t, p.PublishAsync("t", make([]byte, 11), nil), ErrTooLarge)
	assert.Equal(t, uint64(6), p.Stats().Refused)
}

// TestPoolSlowDoneChan: a doneChan nobody reads holds back neither the pool
// nor other doneChans; Stop drops its results after stop_timeout.
func TestPoolSlowDoneChan(t *testing.T) {
	parallel(t)
	_, addrs := startNodes(t, 2)
	p := newTestPool(t, addrs, poolConfig(t, "stop_timeout", 300*time.Millisecond))
	slow := make(chan *ProducerTransaction) // never read
	fast := make(chan *ProducerTransaction, 1)
	for i := range 100 {
		require.NoError(t, p.PublishAsync("slow", []byte("x"), slow, i))
	}
	for i := range 100 {
		require.NoError(t, p.PublishAsync("slow", []byte("y"), fast, i))
		tx := <-fast
		require.NoError(t, tx.Error)
	}
	require.NoError(t, p.Flush(context.Background()))
	// The unread results hold their channel's room, not the pool's (as a
	// Producer's do); room is released just after a result is handed on.
	waitPool(t, p, 5*time.Second, "nothing pending", func(s ProducerPoolStats) bool { return s.Pending == 0 })
	within(t, 3*time.Second, "Stop", p.Stop)
	assert.Zero(t, p.Stats().Pending)
}

// TestPoolByKey: publishes with one key go to one node, stored and
// completed in order; keys spread over the nodes; when a key's node dies
// the key moves and nothing fails.
func TestPoolByKey(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 3)
	p := newTestPool(t, addrs, poolConfig(t))
	waitPool(t, p, 5*time.Second, "three nodes up", func(s ProducerPoolStats) bool { return upNodes(s) == 3 })
	const keys, each = 30, 100
	done := make(chan *ProducerTransaction, keys*each)
	for i := range each {
		for k := range keys {
			key := fmt.Sprintf("key%d", k)
			require.NoError(t, p.PublishAsyncByKey(key, "bykey", []byte(fmt.Sprintf("%s-%d", key, i)), done, key, i))
		}
	}
	next := map[string]int{}
	for range keys * each {
		tx := <-done
		require.NoError(t, tx.Error)
		key, i := tx.Args[0].(string), tx.Args[1].(int)
		assert.Equal(t, next[key], i, "results of %s out of order", key)
		next[key] = i + 1
	}
	nodeOf := map[string]int{}
	for ni, n := range nodes {
		st, err := n.Stats("bykey")
		require.NoError(t, err)
		if st.Depth == 0 {
			continue
		}
		pos := map[string]int{}
		for _, m := range n.Consume(t, "bykey", int(st.Depth+st.ChannelDepth), consumeTimeout) {
			key, num, _ := strings.Cut(string(m.Body), "-")
			if prev, ok := nodeOf[key]; ok && prev != ni {
				t.Errorf("%s stored on nodes %d and %d", key, prev, ni)
			}
			nodeOf[key] = ni
			var i int
			fmt.Sscan(num, &i)
			assert.Equal(t, pos[key], i, "%s stored out of order on node %d", key, ni)
			pos[key] = i + 1
		}
	}
	assert.Len(t, nodeOf, keys)
	used := map[int]bool{}
	for _, ni := range nodeOf {
		used[ni] = true
	}
	assert.Len(t, used, 3, "the keys did not spread over the nodes")

	// Kill the node of key0: once its Producer has seen the connection
	// drop, its next publishes go elsewhere, all ok. (One written before
	// that would end unknown: nsqd may have read it before dying.)
	logs := &testLogger{t: t}
	lines := logs.watch(1000)
	p.SetLogger(logs, LogLevelInfo)
	victim := nodeOf["key0"]
	nodes[victim].Kill()
	waitLine(t, lines, "("+addrs[victim]+") connection lost", 5*time.Second)
	for i := range 20 {
		require.NoError(t, p.PublishByKey("key0", "bykey", []byte(fmt.Sprint(i))))
	}
	moved := false
	for ni, n := range nodes {
		if ni != victim && topicCount(t, n, "bykey") > 0 {
			st, _ := n.Stats("bykey")
			moved = moved || st.Depth+st.ChannelDepth == 20
		}
	}
	assert.True(t, moved, "key0's publishes after the kill are not all on one other node")
}

// TestPoolAsyncKinds: MultiPublishAsync (bodies copied at the call),
// DeferredPublishAsync and the *AsyncContext variants through a pool.
func TestPoolAsyncKinds(t *testing.T) {
	parallel(t)
	nodes, addrs := startNodes(t, 2)
	p := newTestPool(t, addrs, poolConfig(t))
	done := make(chan *ProducerTransaction, 16)
	bodies := [][]byte{[]byte("m1"), []byte("m2"), []byte("m3")}
	require.NoError(t, p.MultiPublishAsync("kinds", bodies, done, "mpub"))
	bodies[0][0] = 'X' // copied at the call: does not change what is published
	ctx := context.Background()
	require.NoError(t, p.DeferredPublishAsync("kinds", 0, []byte("d1"), done, "dpub"))
	require.NoError(t, p.PublishAsyncContext(ctx, "kinds", []byte("p1"), done, "pubctx"))
	require.NoError(t, p.MultiPublishAsyncContext(ctx, "kinds", [][]byte{[]byte("m4")}, done, "mpubctx"))
	require.NoError(t, p.DeferredPublishAsyncContext(ctx, "kinds", 0, []byte("d2"), done, "dpubctx"))
	got := map[string]bool{}
	for range 5 {
		tx := <-done
		require.NoError(t, tx.Error)
		got[tx.Args[0].(string)] = true
	}
	assert.Len(t, got, 5)
	require.NoError(t, p.Flush(ctx))
	assert.ElementsMatch(t, []string{"m1", "m2", "m3", "d1", "p1", "m4", "d2"}, consumeAll(t, "kinds", nodes...))
	assert.Equal(t, uint64(7), p.Stats().Published)
}

// TestPoolContextInFlight: a sync publish whose context ends while a node
// holds it, written and unanswered, returns with the context's error and
// ErrUnknownOutcome (it may be stored: not ErrNeverSent), and says nothing
// against the node.
//
// Sequential: the publish must be written within its context's 100ms,
// which parallel tests contending for the CPU can prevent.
func TestPoolContextInFlight(t *testing.T) {
	held := make(chan struct{})
	fake := fakeNode(t, func(c *fakensqd.Conn) {
		c.ExpectPublish() // never answered
		<-held
	})
	p := newTestPool(t, []string{fake.Addr()}, poolConfig(t, "stop_timeout", 200*time.Millisecond))
	waitPool(t, p, 5*time.Second, "the node up", func(s ProducerPoolStats) bool { return upNodes(s) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := p.PublishContext(ctx, "inflight", []byte("x"))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, ErrNeverSent)
	assert.ErrorIs(t, err, ErrUnknownOutcome)
	s := p.Stats()
	assert.Equal(t, "up", s.Nodes[0].State)
	assert.Zero(t, s.NeverSent)
	within(t, 3*time.Second, "Stop", p.Stop)
	close(held)
}

// TestPoolBoxOrder: async publishes reach a node through its box, taken by
// its router in batches. With one node, every result arrives exactly once,
// in publish order, also when the router takes its box while the pool's mu
// was held (publishes and results pile up meanwhile, and go in one batch).
func TestPoolBoxOrder(t *testing.T) {
	nodes, addrs := startNodes(t, 1)
	p := newTestPool(t, addrs, poolConfig(t))
	waitPool(t, p, 5*time.Second, "the node up", func(s ProducerPoolStats) bool { return upNodes(s) == 1 })

	const N = 3000 // more than one window: some wait in the pool's queue
	done := make(chan *ProducerTransaction, 2*N)
	require.NoError(t, nodes[0].Pause()) // nsqd answers nothing until mu is held
	for i := range N {
		require.NoError(t, p.PublishAsync("box", []byte(fmt.Sprint(i)), done, i))
	}
	p.mu.Lock()
	require.NoError(t, nodes[0].Resume())
	time.Sleep(50 * time.Millisecond) // answers pile up behind mu; nothing signals that
	p.mu.Unlock()
	for i := range N {
		require.NoError(t, p.PublishAsync("box", []byte(fmt.Sprint(N+i)), done, N+i))
	}
	for i := range 2 * N {
		tx := <-done
		require.NoError(t, tx.Error)
		require.Equal(t, []any{i}, tx.Args, "result out of order")
	}
	require.NoError(t, p.Flush(context.Background()))
	select {
	case tx := <-done:
		t.Fatalf("a result delivered twice: %v", tx.Args)
	default:
	}
	assert.Equal(t, uint64(2*N), p.Stats().Published)
	s, err := nodes[0].Stats("box")
	require.NoError(t, err)
	assert.Equal(t, int64(2*N), s.MessageCount)
}

// TestPoolStartsLazily: NewProducerPool connects nothing until the first
// publish, Flush or SetLogger*: a logger set right after it gets every
// line (the nodes' "connecting" lines included), none goes to the default
// logger first. A pool stopped before it started leaves no goroutine.
func TestPoolStartsLazily(t *testing.T) {
	_, addrs := startNodes(t, 1)
	launched := func(p *ProducerPool) bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		// A node that has left the pool (after Stop) left through its
		// goroutine.
		return len(p.nodes) == 0 || p.nodes[0].launched
	}
	stopAtEnd := func(p *ProducerPool) {
		livePools.Add(1)
		t.Cleanup(func() {
			p.Stop()
			if livePools.Add(-1) == 0 {
				requirePoolNoLeaks(t)
			}
		})
	}

	p, err := NewProducerPool(addrs, poolConfig(t))
	require.NoError(t, err)
	stopAtEnd(p)
	assert.False(t, launched(p), "a node started connecting before anything asked for it")
	assert.Equal(t, "connecting", p.Stats().Nodes[0].State)
	logs := &testLogger{t: t}
	lines := logs.watch(100)
	p.SetLogger(logs, LogLevelInfo)
	waitLine(t, lines, "("+addrs[0]+") connecting to nsqd", 5*time.Second)
	waitPool(t, p, 5*time.Second, "the node up", func(s ProducerPoolStats) bool { return upNodes(s) == 1 })

	for name, first := range map[string]func(p *ProducerPool){
		"Publish": func(p *ProducerPool) { assert.NoError(t, p.Publish("lazy", []byte("x"))) },
		"Flush":   func(p *ProducerPool) { assert.NoError(t, p.Flush(context.Background())) },
		"Stop":    func(p *ProducerPool) { p.Stop() },
	} {
		p, err := NewProducerPool(addrs, poolConfig(t))
		require.NoError(t, err)
		stopAtEnd(p)
		assert.False(t, launched(p), name)
		first(p)
		assert.True(t, launched(p), name)
	}
}
