package nsq

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const consumeTimeout = 10 * time.Second

func TestPublishRoundTrip(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), nil)

	want := bodies("sync", 20)
	for _, b := range want {
		require.NoError(t, p.Publish("roundtrip", b))
	}
	got := n.Consume(t, "roundtrip", len(want), consumeTimeout)
	assert.Equal(t, strs(want), bodyStrings(got))
	assert.Equal(t, int64(20), topicCount(t, n, "roundtrip"))
	assert.Equal(t, "127.0.0.1", strings.Split(p.String(), ":")[0])
}

func TestMultiPublish(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), nil)

	want := bodies("mpub", 100)
	require.NoError(t, p.MultiPublish("multi", want))
	got := n.Consume(t, "multi", 100, consumeTimeout)
	assert.Equal(t, strs(want), bodyStrings(got))
	assert.Equal(t, int64(100), topicCount(t, n, "multi"))
}

// nsqd v1.3.0 scans a channel's deferred messages only once its list of
// channels includes it, a list it makes at start and then only every 5 s
// (a setting it does not expose): the channel Consume reads is created and
// nsqd restarted first, so that the deferred message comes out within the
// scan interval (100ms) of its delay, not at the next refresh.
func TestDeferredPublish(t *testing.T) {
	parallel(t)
	n := nsqdtest.Start(t)
	require.NoError(t, n.CreateChannel("deferred", nsqdtest.ConsumeChannel))
	n.Restart()
	p := newTestProducer(t, n.TCPAddr(), nil)

	const delay = 1500 * time.Millisecond
	start := time.Now()
	require.NoError(t, p.DeferredPublish("deferred", delay, []byte("later")))
	require.NoError(t, p.Publish("deferred", []byte("now")))
	got := n.Consume(t, "deferred", 2, consumeTimeout)
	arrived := time.Since(start)
	assert.Equal(t, []string{"now", "later"}, bodyStrings(got))
	assert.GreaterOrEqual(t, arrived, delay, "the deferred message must not arrive before its delay")
}

func TestPublishAsyncOrderAndArgs(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), nil)

	const total = 1000
	done := make(chan *ProducerTransaction, total)
	for i := 0; i < total; i++ {
		require.NoError(t, p.PublishAsync("async", []byte(fmt.Sprintf("m%d", i)), done, i, "arg"))
	}
	for i := 0; i < total; i++ {
		tx := <-done
		require.NoError(t, tx.Error)
		require.Equal(t, []interface{}{i, "arg"}, tx.Args, "transaction %d out of order", i)
	}
	// MultiPublishAsync copies its bodies at the call: reusing them at once is fine.
	batch := bodies("ma", 10)
	require.NoError(t, p.MultiPublishAsync("async", batch, done, "mpub"))
	for _, b := range batch {
		b[0] = 'X'
	}
	require.NoError(t, p.DeferredPublishAsync("async", 0, []byte("dpub"), done, "dpub"))
	tx := <-done
	assert.NoError(t, tx.Error)
	assert.Equal(t, []interface{}{"mpub"}, tx.Args)
	tx = <-done
	assert.NoError(t, tx.Error)
	assert.Equal(t, []interface{}{"dpub"}, tx.Args)

	// A nil doneChan drops the result; Flush waits for the answer all the same.
	require.NoError(t, p.PublishAsync("async", []byte("dropped"), nil))
	require.NoError(t, p.Flush(t.Context()))
	assert.Equal(t, int64(total+10+1+1), topicCount(t, n, "async"))
	got := n.Consume(t, "async", total+12, consumeTimeout)
	assert.Equal(t, "ma-0", string(got[total].Body))
}

func TestConcurrentPublishers(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), nil)

	const goroutines, each = 32, 300
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := p.Publish("shared", []byte(fmt.Sprintf("g%d-%d", g, i))); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assert.Equal(t, int64(goroutines*each), topicCount(t, n, "shared"))
}

func TestIdentifyRefused(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), testConfig(t, "heartbeat_interval", "100ms"))

	err := p.Publish("hb", []byte("x"))
	var idErr ErrIdentify
	require.ErrorAs(t, err, &idErr)
	assert.Equal(t, "E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid", idErr.Reason)
	assert.ErrorIs(t, err, ErrNeverSent)
	assert.ErrorIs(t, err, ErrNotConnected)
	assert.Equal(t, int64(0), topicCount(t, n, "hb"))
}

// The connection stays idle for three heartbeats (3 s), longer than
// read_timeout (1.9 s); each heartbeat must be read within 0.9 s of its
// arrival, a margin for a machine busy with the parallel tests.
func TestHeartbeatsKeepAnIdleConnection(t *testing.T) {
	parallel(t)
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), testConfig(t, "heartbeat_interval", "1s", "read_timeout", "1900ms"))
	lines := p.logs.logger[LogLevelDebug].(*testLogger).watch(64)

	require.NoError(t, p.Publish("idle", []byte("before")))
	for range 3 {
		waitLine(t, lines, "heartbeat received", 5*time.Second)
	}
	require.NoError(t, p.Publish("idle", []byte("after")))

	st := p.Stats()
	assert.GreaterOrEqual(t, st.Heartbeats, uint64(3))
	assert.Equal(t, uint64(1), st.Connects, "the connection must survive the idle time")
	assert.Equal(t, uint64(2), st.Published)
	assert.Equal(t, []string{"before", "after"}, bodyStrings(n.Consume(t, "idle", 2, consumeTimeout)))
}

func TestCompression(t *testing.T) {
	for _, tc := range []struct {
		name string
		kv   []any
	}{
		{"snappy", []any{"snappy", true}},
		{"deflate", []any{"deflate", true, "deflate_level", 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := nsqdtest.Start(t, "--snappy=true", "--deflate=true")
			p := newTestProducer(t, n.TCPAddr(), testConfig(t, tc.kv...))
			publishMix(t, p, tc.name)
			want := append(strs(bodies(tc.name, 5)), "mpub-0", "mpub-1", "mpub-2")
			assert.Equal(t, want, bodyStrings(n.Consume(t, tc.name, len(want), consumeTimeout)))
		})
	}
}

// publishMix publishes 5 bodies with Publish, then 3 with MultiPublish.
func publishMix(t *testing.T, p *Producer, topic string) {
	t.Helper()
	for _, b := range bodies(topic, 5) {
		require.NoError(t, p.Publish(topic, b))
	}
	require.NoError(t, p.MultiPublish(topic, bodies("mpub", 3)))
}

func TestTLS(t *testing.T) {
	ca, cert, key := nsqdtest.GenCerts(t)
	n := nsqdtest.Start(t, "--tls-cert="+cert, "--tls-key="+key, "--tls-required=tcp-https", "--snappy=true")

	for _, tc := range []struct {
		name string
		kv   []any
	}{
		{"tls", []any{"tls_v1", true, "tls_root_ca_file", ca}},
		{"tls_snappy", []any{"tls_v1", true, "tls_root_ca_file", ca, "snappy", true}},
		{"tls_min_version", []any{"tls_v1", true, "tls_root_ca_file", ca, "tls_min_version", "tls1.2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestProducer(t, n.TCPAddr(), testConfig(t, tc.kv...))
			publishMix(t, p, tc.name)
			assert.Equal(t, int64(8), topicCount(t, n, tc.name))
		})
	}

	t.Run("unverified_server_refused", func(t *testing.T) {
		p := newTestProducer(t, n.TCPAddr(), testConfig(t, "tls_v1", true))
		err := p.Publish("tls_refused", []byte("x"))
		require.ErrorIs(t, err, ErrNeverSent)
		assert.Contains(t, err.Error(), "TLS handshake")
		assert.Contains(t, err.Error(), "certificate")
	})

	t.Run("insecure_skip_verify", func(t *testing.T) {
		p := newTestProducer(t, n.TCPAddr(), testConfig(t, "tls_v1", true, "tls_insecure_skip_verify", true))
		require.NoError(t, p.Publish("tls_insecure", []byte("x")))
	})

	t.Run("tls_asked_not_offered", func(t *testing.T) {
		plain := nsqdtest.Start(t)
		p := newTestProducer(t, plain.TCPAddr(), testConfig(t, "tls_v1", true, "tls_root_ca_file", ca))
		err := p.Publish("tls_plain", []byte("x"))
		require.ErrorIs(t, err, ErrNeverSent)
		assert.Contains(t, err.Error(), "did not agree to TLS")
		assert.Equal(t, int64(0), topicCount(t, plain, "tls_plain"))
	})

	t.Run("plain_client_refused", func(t *testing.T) {
		p := newTestProducer(t, n.TCPAddr(), nil)
		err := p.Publish("tls_plain", []byte("x"))
		var perr ErrProtocol
		require.ErrorAs(t, err, &perr)
		assert.Equal(t, "E_INVALID cannot PUB in current state (TLS required)", perr.Reason)
		assert.Equal(t, int64(0), topicCount(t, n, "tls_plain"))
	})
}

func TestAuth(t *testing.T) {
	authAddr := nsqdtest.AuthServer(t, "s3cret")
	n := nsqdtest.Start(t, "--auth-http-address="+authAddr)

	t.Run("good_secret", func(t *testing.T) {
		p := newTestProducer(t, n.TCPAddr(), testConfig(t, "auth_secret", "s3cret"))
		publishMix(t, p, "auth_ok")
		assert.Equal(t, int64(8), topicCount(t, n, "auth_ok"))
	})
	t.Run("bad_secret", func(t *testing.T) {
		p := newTestProducer(t, n.TCPAddr(), testConfig(t, "auth_secret", "wrong"))
		err := p.Publish("auth_bad", []byte("x"))
		var perr ErrProtocol
		require.ErrorAs(t, err, &perr)
		assert.Equal(t, "E_AUTH_FAILED AUTH failed", perr.Reason)
		assert.ErrorIs(t, err, ErrNeverSent)
	})
	t.Run("missing_secret", func(t *testing.T) {
		p := newTestProducer(t, n.TCPAddr(), nil)
		err := p.Publish("auth_missing", []byte("x"))
		require.ErrorIs(t, err, ErrNeverSent)
		assert.Contains(t, err.Error(), "requires AUTH")
	})
	assert.Equal(t, int64(0), topicCount(t, n, "auth_bad")+topicCount(t, n, "auth_missing"))
}

func TestNsqdDownThenBack(t *testing.T) {
	parallel(t)
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), nil)
	require.NoError(t, p.Publish("outage", []byte("before")))

	n.Stop()
	// While nsqd is down a publish fails, promptly: dial_timeout (1s) plus
	// at most max_reconnect_backoff (1s).
	for i := 0; i < 3; i++ {
		var err error
		within(t, 5*time.Second, "Publish while nsqd is down", func() {
			err = p.Publish("outage", []byte("during"))
		})
		require.Error(t, err)
		// The first publish may have been written before the broken
		// connection was noticed; later ones never reach a socket.
		require.ErrorIs(t, err, ErrNotConnected)
	}
	var err error
	within(t, 5*time.Second, "Publish while nsqd is down", func() {
		err = p.Publish("outage", []byte("during"))
	})
	require.ErrorIs(t, err, ErrNeverSent)
	var opErr *net.OpError
	assert.ErrorAs(t, err, &opErr, "the dial error is kept as the cause")

	n.Restart()
	within(t, 5*time.Second, "Publish after nsqd is back", func() {
		err = p.Publish("outage", []byte("after"))
	})
	require.NoError(t, err)
	// "before" went to disk when nsqd stopped; nsqd does not keep order
	// between its disk and memory queues.
	assert.ElementsMatch(t, []string{"before", "after"}, bodyStrings(n.Consume(t, "outage", 2, consumeTimeout)))
}

func TestPingAndStop(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), nil)

	require.NoError(t, p.Ping())
	assert.Equal(t, uint64(1), p.Stats().Connects, "Ping connects")
	p.Stop()
	p.Stop() // a second Stop does nothing
	assert.Same(t, ErrStopped, p.Publish("t", []byte("x")))
	assert.Same(t, ErrStopped, p.PublishAsync("t", []byte("x"), nil))
	assert.Same(t, ErrStopped, p.MultiPublish("t", [][]byte{[]byte("x")}))
	assert.Same(t, ErrStopped, p.DeferredPublish("t", time.Second, []byte("x")))
	assert.Same(t, ErrStopped, p.Ping())
	requireNoLeaks(t)
}

func TestStopUnusedProducer(t *testing.T) {
	p, err := NewProducer("127.0.0.1:1", NewConfig())
	require.NoError(t, err)
	p.Stop()
	assert.Same(t, ErrStopped, p.Publish("t", []byte("x")))
	requireNoLeaks(t)
}

func TestLocalAddr(t *testing.T) {
	n := nsqdtest.Start(t)
	// Reserve a free port, then give it to the producer as its local address.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	local := l.Addr().String()
	require.NoError(t, l.Close())

	p := newTestProducer(t, n.TCPAddr(), testConfig(t, "local_addr", local))
	require.NoError(t, p.Publish("local", []byte("x")))
	// nsqd lists its producers' addresses.
	resp, err := http.Get("http://" + n.HTTPAddr() + "/stats?format=json&topic=local")
	require.NoError(t, err)
	defer resp.Body.Close()
	stats, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(stats), `"remote_address":"`+local+`"`)
}

func TestNewProducerValidates(t *testing.T) {
	cfg := NewConfig()
	cfg.ReadTimeout = time.Millisecond
	_, err := NewProducer("127.0.0.1:4150", cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "read_timeout")

	_, err = NewProducer("127.0.0.1:4150", nil)
	require.Error(t, err)

	assert.Panics(t, func() { NewProducer("127.0.0.1:4150", &Config{}) })

	// The config is copied: changing it afterwards has no effect.
	cfg = NewConfig()
	p, err := NewProducer("127.0.0.1:4150", cfg)
	require.NoError(t, err)
	cfg.MaxMsgSize = 1
	assert.Equal(t, int64(0), p.config.MaxMsgSize)
	p.Stop()
}

func TestBadInputRefusedAtTheCall(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), testConfig(t, "max_msg_size", 10, "max_body_size", 30))
	done := make(chan *ProducerTransaction, 1)
	long := strings.Repeat("a", 65)
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"topic_with_space", func() error { return p.Publish("bad topic", []byte("x")) }, ErrInvalidTopic},
		{"empty_topic", func() error { return p.Publish("", []byte("x")) }, ErrInvalidTopic},
		{"long_topic", func() error { return p.Publish(long, []byte("x")) }, ErrInvalidTopic},
		{"async_bad_topic", func() error { return p.PublishAsync("a/b", []byte("x"), done) }, ErrInvalidTopic},
		{"nil_body", func() error { return p.Publish("t", nil) }, ErrEmptyBody},
		{"empty_body", func() error { return p.PublishAsync("t", []byte{}, done) }, ErrEmptyBody},
		{"empty_mpub", func() error { return p.MultiPublish("t", nil) }, ErrEmptyBody},
		{"mpub_with_empty_body", func() error { return p.MultiPublish("t", [][]byte{[]byte("a"), nil}) }, ErrEmptyBody},
		{"over_max_msg_size", func() error { return p.Publish("t", make([]byte, 11)) }, ErrTooLarge},
		{"mpub_over_max_body_size", func() error { return p.MultiPublishAsync("t", bodies("0123456", 3), done) }, ErrTooLarge},
		{"negative_delay", func() error { return p.DeferredPublish("t", -time.Second, []byte("x")) }, ErrInvalidDelay},
		{"delay_over_max", func() error { return p.DeferredPublish("t", time.Hour+time.Millisecond, []byte("x")) }, ErrInvalidDelay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.ErrorIs(t, err, tc.want)
		})
	}
	require.NoError(t, p.Publish("t", make([]byte, 10)), "exactly max_msg_size is fine")
	require.NoError(t, p.DeferredPublish("t", time.Hour, []byte("x")), "exactly the max delay is fine")
	assert.Equal(t, uint64(12), p.Stats().Refused)
	assert.Equal(t, uint64(1), p.Stats().Connects, "no refused publish reached the connection")
	assert.Len(t, done, 0)
}

func TestErrorTexts(t *testing.T) {
	assert.Equal(t, "failed to IDENTIFY - E_BAD_BODY x", ErrIdentify{Reason: "E_BAD_BODY x"}.Error())
	assert.Equal(t, "E_BAD_TOPIC x", ErrProtocol{Reason: "E_BAD_TOPIC x"}.Error())
	assert.Equal(t, "E_BAD_TOPIC", ErrProtocol{Reason: "E_BAD_TOPIC x"}.Code())
	assert.Equal(t, "not connected", ErrNotConnected.Error())
	assert.Equal(t, "stopped", ErrStopped.Error())
	assert.Equal(t, "closing", ErrClosing.Error())
	assert.Equal(t, "already connected", ErrAlreadyConnected.Error())
	assert.True(t, errors.Is(neverSent(errors.New("x")), ErrNotConnected))
	assert.True(t, errors.Is(unknownOutcome(errors.New("x")), ErrNotConnected))
	assert.False(t, errors.Is(neverSent(nil), ErrUnknownOutcome))
	assert.Equal(t, []string{"DBG", "INF", "WRN", "ERR"}, []string{LogLevelDebug.String(), LogLevelInfo.String(), LogLevelWarning.String(), LogLevelError.String()})
}

func TestAuthServerDown(t *testing.T) {
	// An auth server address where nothing listens.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := l.Addr().String()
	require.NoError(t, l.Close())
	n := nsqdtest.Start(t, "--auth-http-address="+dead)

	p := newTestProducer(t, n.TCPAddr(), testConfig(t, "auth_secret", "s3cret"))
	within(t, 15*time.Second, "Publish with the auth server down", func() { err = p.Publish("auth_down", []byte("x")) })
	require.ErrorIs(t, err, ErrNeverSent)
	var perr ErrProtocol
	require.ErrorAs(t, err, &perr)
	assert.Equal(t, "E_AUTH_FAILED AUTH failed", perr.Reason) // nsqd says no more when its auth server is down
	assert.Equal(t, int64(0), topicCount(t, n, "auth_down"))
}

func TestPointedAtNsqdHTTPPort(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.HTTPAddr(), nil)
	var err error
	within(t, 10*time.Second, "Publish to an HTTP port", func() { err = p.Publish("http", []byte("x")) })
	require.ErrorIs(t, err, ErrNeverSent)
	var ferr *FrameError
	require.ErrorAs(t, err, &ferr)
	assert.Contains(t, err.Error(), "HTTP port")
}

// blackhole returns the address of a listener whose accept queue is full, so
// that a new connection attempt hangs (its SYN is dropped) until it times out.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	t.Cleanup(func() { syscall.Close(fd) })
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, syscall.Listen(fd, 0))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the accept queue (backlog 0 still takes one or two).
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return addr // the queue is full: this attempt hung and timed out
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("could not fill the accept queue")
	return ""
}

func TestDialTimeout(t *testing.T) {
	addr := blackhole(t)
	p := newTestProducer(t, addr, testConfig(t, "dial_timeout", "150ms"))
	var err error
	// The default dial_timeout is 1s: returning well before proves ours is used.
	within(t, 900*time.Millisecond, "Publish to a server that never accepts", func() { err = p.Publish("t", []byte("x")) })
	require.ErrorIs(t, err, ErrNeverSent)
	var nerr net.Error
	require.ErrorAs(t, err, &nerr)
	assert.True(t, nerr.Timeout(), "a dial timeout: %v", err)
}
