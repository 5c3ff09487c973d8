package nsq

import (
	"context"
	"flag"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Connections to the fake nsqd's in-memory listeners (fakensqd.NewMem)
	// go through the in-memory network; every other address to TCP. Set
	// once, before any Conn exists. nsqd itself is built lazily, by the
	// first test that starts one (nsqdtest.Start): unit tests never wait
	// for it.
	dialContext = func(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
		if fakensqd.IsMemAddr(addr) {
			return fakensqd.DialMem(ctx, addr)
		}
		return d.DialContext(ctx, "tcp", exampleDialAddr(addr))
	}
	// The tests that run in parallel (see parallel) spend their time
	// waiting on nsqd processes and timers, not on the CPU: run all of them
	// at once (about 20), so that the longest waits start first, unless
	// -test.parallel says otherwise (its default is GOMAXPROCS, 2 on a
	// small machine).
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", strconv.Itoa(max(32, runtime.GOMAXPROCS(0))))
	}
	goleak.VerifyTestMain(runThenStop{m, startSimChildEarly()}, leakIgnores()...)
}

// runThenStop runs the tests, then calls stop.
type runThenStop struct {
	m    *testing.M
	stop func()
}

func (r runThenStop) Run() int {
	defer r.stop()
	return r.m.Run()
}

// parallelRunning counts the tests that called parallel and have not ended.
// Go runs a package's parallel tests only once all of its sequential tests
// have ended, and runs no sequential test beside them: while the count is
// above zero, every running test is a parallel one (or a subtest of one).
var parallelRunning atomic.Int32

// parallel runs t beside the package's other parallel tests. Use it for a
// test whose time goes to waiting on real processes and timers, which
// shares no package state with the others and makes no timing assertion
// that contention could break. Its producers and pools are not checked for
// leaks when they stop (other tests' goroutines run beside them):
// VerifyTestMain checks, once every test has ended, that none of them left
// a goroutine behind.
func parallel(t *testing.T) {
	t.Helper()
	t.Parallel() // returns once the sequential tests have ended
	parallelRunning.Add(1)
	t.Cleanup(func() { parallelRunning.Add(-1) }) // the last cleanup to run
}

// inParallel reports whether the running tests are parallel ones (see
// parallelRunning).
func inParallel() bool { return parallelRunning.Load() > 0 }

// requireSequential fails a test that checks every goroutine of the
// process while parallel tests run: their goroutines would count as its
// leaks. Such a test must not call parallel.
func requireSequential(t testing.TB, what string) {
	t.Helper()
	if inParallel() {
		t.Fatalf("%s sees every goroutine of the process: it cannot run in a parallel test", what)
	}
}

// leakIgnores are the goroutines of the tests' own infrastructure that may
// outlive a producer while the test still runs: the fake nsqd's and the
// TCP proxy's, nsqd's process watchers, idle HTTP keep-alives (nsqd's
// stats endpoint).
func leakIgnores() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq/internal/fakensqd.(*Server).runScript"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq/internal/fakensqd.(*Server).acceptLoop"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq/internal/nsqdtest.(*Proxy).acceptLoop"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq/internal/nsqdtest.(*Proxy).serve"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq/internal/nsqdtest.pipe"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq/internal/nsqdtest.(*Nsqd).readLog"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq/internal/nsqdtest.(*Nsqd).launch.func1"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
		goleak.IgnoreAnyFunction("testing/synctest.Test"),                // the goroutine that runs a bubble
		goleak.IgnoreAnyFunction("testing/synctest.testingSynctestTest"), // the bubble's root
	}
}

// requireNoLeaks fails the test if a goroutine is still running other
// than the tests' infrastructure (leakIgnores) and those opts ignore: a
// producer's router, a Conn's goroutines, a connection attempt, a courier,
// or a goroutine of the test itself.
func requireNoLeaks(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	requireSequential(t, "requireNoLeaks")
	goleak.VerifyNone(t, append(leakIgnores(), opts...)...)
}

// testConfig returns a Config with the given option/value pairs set.
func testConfig(t testing.TB, kv ...any) *Config {
	t.Helper()
	cfg := NewConfig()
	for i := 0; i < len(kv); i += 2 {
		require.NoError(t, cfg.Set(kv[i].(string), kv[i+1]), "option %v", kv[i])
	}
	return cfg
}

// liveProducers counts, per test, the producers newTestProducer made that
// are not stopped yet.
var liveProducers sync.Map // testing.TB -> *atomic.Int32

// newTestProducer makes a Producer for addr whose logs go to the test, and
// which is stopped when the test ends; once the test's last one is stopped,
// no goroutine of the package may be left (checked at once in a sequential
// test, by VerifyTestMain in a parallel one).
func newTestProducer(t testing.TB, addr string, cfg *Config) *Producer {
	t.Helper()
	if cfg == nil {
		cfg = NewConfig()
	}
	p, err := NewProducer(addr, cfg)
	require.NoError(t, err)
	p.SetLogger(&testLogger{t: t}, LogLevelDebug)
	before := goleak.IgnoreCurrent()
	live, _ := liveProducers.LoadOrStore(t, new(atomic.Int32))
	live.(*atomic.Int32).Add(1)
	t.Cleanup(func() {
		p.Stop()
		if live.(*atomic.Int32).Add(-1) == 0 {
			liveProducers.Delete(t)
			if !inParallel() {
				requireNoLeaks(t, before)
			}
		}
	})
	return p
}

// testLogger sends a producer's log to the test log, and to lines when set.
type testLogger struct {
	t     testing.TB
	mu    sync.Mutex
	lines chan string
}

func (l *testLogger) Output(calldepth int, s string) error {
	l.t.Log(s)
	l.mu.Lock()
	ch := l.lines
	l.mu.Unlock()
	if ch != nil {
		select {
		case ch <- s:
		default:
		}
	}
	return nil
}

// watch returns a channel that receives the log lines from now on (lines
// that find it full are dropped).
func (l *testLogger) watch(size int) <-chan string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = make(chan string, size)
	return l.lines
}

// waitLine waits up to d for a log line containing substr.
func waitLine(t testing.TB, lines <-chan string, substr string, d time.Duration) string {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case line := <-lines:
			if strings.Contains(line, substr) {
				return line
			}
		case <-timer.C:
			t.Fatalf("no log line with %q within %s", substr, d)
			return ""
		}
	}
}

// within runs f and fails the test if it has not returned after d: the
// guard for "never hangs".
func within(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Fatalf("%s did not return within %s", what, d)
	}
}

// topicCount returns how many messages nsqd has taken for topic.
func topicCount(t testing.TB, n *nsqdtest.Nsqd, topic string) int64 {
	t.Helper()
	st, err := n.Stats(topic)
	require.NoError(t, err)
	return st.MessageCount
}

func bodies(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte(fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

func bodyStrings(msgs []nsqdtest.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Body)
	}
	return out
}

func strs(b [][]byte) []string {
	out := make([]string, len(b))
	for i := range b {
		out[i] = string(b[i])
	}
	return out
}
