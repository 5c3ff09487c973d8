package nsq

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	// Build nsqd v1.3.0 once, before any test's clock starts.
	if _, err := nsqdtest.Binary(); err != nil {
		fmt.Fprintln(os.Stderr, "cannot build nsqd for the tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		if leaks := waitNoLeaks(5 * time.Second); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "goroutines of the package still running after all tests:\n%s\n", strings.Join(leaks, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines returns the stacks of goroutines running the package's
// own code: a Producer's router, a Conn's read or write goroutine, a
// connection attempt.
func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var leaks []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "nsqkit/go-nsq.(*Producer)") || strings.Contains(g, "nsqkit/go-nsq.(*Conn)") {
			leaks = append(leaks, g)
		}
	}
	return leaks
}

// waitNoLeaks waits up to d for the package's goroutines to finish exiting
// (a goroutine that has signalled its exit still needs a moment to return).
func waitNoLeaks(d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		leaks := leakedGoroutines()
		if len(leaks) == 0 || time.Now().After(deadline) {
			return leaks
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// requireNoLeaks fails the test if any goroutine of the package is left.
func requireNoLeaks(t testing.TB) {
	t.Helper()
	if leaks := waitNoLeaks(5 * time.Second); len(leaks) > 0 {
		t.Fatalf("%d goroutines leaked:\n%s", len(leaks), strings.Join(leaks, "\n\n"))
	}
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
// no goroutine of the package may be left.
func newTestProducer(t testing.TB, addr string, cfg *Config) *Producer {
	t.Helper()
	if cfg == nil {
		cfg = NewConfig()
	}
	p, err := NewProducer(addr, cfg)
	require.NoError(t, err)
	p.SetLogger(&testLogger{t: t}, LogLevelDebug)
	live, _ := liveProducers.LoadOrStore(t, new(atomic.Int32))
	live.(*atomic.Int32).Add(1)
	t.Cleanup(func() {
		p.Stop()
		if live.(*atomic.Int32).Add(-1) == 0 {
			liveProducers.Delete(t)
			requireNoLeaks(t)
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
