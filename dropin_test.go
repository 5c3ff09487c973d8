package nsq

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// go-nsq returns ErrIdentify and ErrProtocol as values; they classify
// themselves, so the helpers hand them back unwrapped.
func TestErrorValuesClassify(t *testing.T) {
	ident := ErrIdentify{Reason: "E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid"}
	assert.True(t, errors.Is(ident, ErrNeverSent))
	assert.True(t, errors.Is(ident, ErrNotConnected))
	assert.False(t, errors.Is(ident, ErrUnknownOutcome))
	assert.Equal(t, error(ident), neverSent(ident), "returned as the value")
	_, isIdentify := neverSent(ident).(ErrIdentify)
	assert.True(t, isIdentify, "err.(ErrIdentify) holds, as go-nsq's TestProducerHeartbeat asserts")

	mpub := ErrProtocol{Reason: "E_MPUB_FAILED MPUB failed disk full"}
	assert.True(t, errors.Is(mpub, ErrUnknownOutcome))
	assert.True(t, errors.Is(mpub, ErrNotConnected))
	assert.False(t, errors.Is(mpub, ErrNeverSent))
	assert.Equal(t, error(mpub), unknownOutcome(mpub))

	refused := ErrProtocol{Reason: "E_BAD_MESSAGE PUB message too big 2000 > 1024"}
	for _, class := range []error{ErrNeverSent, ErrUnknownOutcome, ErrNotConnected} {
		assert.False(t, errors.Is(refused, class), "a refusal is not %v", class)
	}
	assert.Equal(t, refused, ErrProtocol{Reason: "E_BAD_MESSAGE PUB message too big 2000 > 1024"}, "comparable")

	// A cause that does not classify itself, or does so otherwise, is wrapped.
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	wrapped := neverSent(dial)
	assert.ErrorIs(t, wrapped, ErrNeverSent)
	var opErr *net.OpError
	assert.ErrorAs(t, wrapped, &opErr)
	assert.Equal(t, "not connected: never sent to nsqd: dial tcp: connection refused", wrapped.Error())
	assert.NotEqual(t, error(ident), unknownOutcome(ident), "an IDENTIFY failure is never an unknown outcome")
	assert.ErrorIs(t, unknownOutcome(ident), ErrUnknownOutcome)
	assert.NotEqual(t, error(refused), neverSent(refused))
	assert.ErrorIs(t, neverSent(refused), ErrNeverSent)
	assert.ErrorIs(t, neverSent(fmt.Errorf("x: %w", ident)), ErrNeverSent)
}

// The assertions of go-nsq v1.1.0's own producer_test.go and config_test.go,
// in tests of our own, against a real nsqd. The one we differ on on purpose:
// "tls1.3" is accepted (see TestGoNSQConfigSet).

// consumeBodies reads count messages of topic and returns their bodies;
// go-nsq's tests read them with a consumer.
func consumeBodies(t *testing.T, n *nsqdtest.Nsqd, topic string, count int) []string {
	t.Helper()
	var out []string
	for _, m := range n.Consume(t, topic, count, 10*time.Second) {
		out = append(out, string(m.Body))
	}
	return out
}

func repeated(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// go-nsq's TestProducerConnection and TestProducerPing.
func TestGoNSQProducerConnectionAndPing(t *testing.T) {
	n := nsqdtest.Start(t)
	cfg := NewConfig()
	cfg.LocalAddr, _ = net.ResolveTCPAddr("tcp", "127.0.0.1:0")
	p := newTestProducer(t, n.TCPAddr(), cfg)
	require.NoError(t, p.Publish("write_test", []byte("test")), "lazily connects")
	p.Stop()
	assert.Same(t, ErrStopped, p.Publish("write_test", []byte("fail test")))

	p = newTestProducer(t, n.TCPAddr(), nil)
	require.NoError(t, p.Ping(), "connects on Ping")
	p.Stop()
	assert.Same(t, ErrStopped, p.Ping())
}

// go-nsq's TestProducerPublish and TestProducerMultiPublish.
func TestGoNSQProducerPublishAndMultiPublish(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), nil)
	for range 10 {
		require.NoError(t, p.Publish("publish", []byte("publish_test_case")))
	}
	require.NoError(t, p.Publish("publish", []byte("bad_test_case")))
	assert.Equal(t, append(repeated("publish_test_case", 10), "bad_test_case"), consumeBodies(t, n, "publish", 11))

	require.NoError(t, p.MultiPublish("multi_publish", bodiesOf(repeated("multipublish_test_case", 10))))
	require.NoError(t, p.Publish("multi_publish", []byte("bad_test_case")))
	assert.Equal(t, append(repeated("multipublish_test_case", 10), "bad_test_case"), consumeBodies(t, n, "multi_publish", 11))
}

func bodiesOf(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

// go-nsq's TestProducerPublishAsync and TestProducerMultiPublishAsync.
func TestGoNSQProducerPublishAsyncAndMultiPublishAsync(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), nil)
	responseChan := make(chan *ProducerTransaction, 10)
	for range 10 {
		require.NoError(t, p.PublishAsync("async_publish", []byte("publish_test_case"), responseChan, "test"))
	}
	for range 10 {
		trans := recvWithin(t, responseChan, "PublishAsync's result")
		require.NoError(t, trans.Error)
		assert.Equal(t, "test", trans.Args[0].(string))
	}
	require.NoError(t, p.Publish("async_publish", []byte("bad_test_case")))
	assert.Equal(t, append(repeated("publish_test_case", 10), "bad_test_case"), consumeBodies(t, n, "async_publish", 11))

	unbuffered := make(chan *ProducerTransaction)
	require.NoError(t, p.MultiPublishAsync("multi_publish_async", bodiesOf(repeated("multipublish_test_case", 10)), unbuffered, "test0", 1))
	trans := recvWithin(t, unbuffered, "MultiPublishAsync's result")
	require.NoError(t, trans.Error)
	assert.Equal(t, "test0", trans.Args[0].(string))
	assert.Equal(t, 1, trans.Args[1].(int))
	require.NoError(t, p.Publish("multi_publish_async", []byte("bad_test_case")))
	assert.Equal(t, append(repeated("multipublish_test_case", 10), "bad_test_case"), consumeBodies(t, n, "multi_publish_async", 11))
}

// go-nsq's TestProducerHeartbeat: a heartbeat interval nsqd refuses fails
// Publish with the ErrIdentify value itself; one it accepts keeps the
// connection through an idle pause until nsqd's heartbeat, which it answers.
func TestGoNSQProducerHeartbeat(t *testing.T) {
	parallel(t)
	n := nsqdtest.Start(t)
	cfg := NewConfig()
	cfg.HeartbeatInterval = 100 * time.Millisecond
	p := newTestProducer(t, n.TCPAddr(), cfg)
	err := p.Publish("heartbeat", []byte("publish_test_case"))
	require.Error(t, err)
	identifyError, ok := err.(ErrIdentify)
	require.True(t, ok, "err.(ErrIdentify) holds: %#v", err)
	assert.Equal(t, "E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid", identifyError.Reason)

	cfg = NewConfig()
	cfg.HeartbeatInterval = 1000 * time.Millisecond
	p = newTestProducer(t, n.TCPAddr(), cfg)
	lines := producerLogLines(p)
	require.NoError(t, p.Publish("heartbeat", []byte("publish_test_case")))
	// Idle until nsqd's heartbeat comes (go-nsq's test sleeps longer than
	// the interval and hopes one came).
	waitLine(t, lines, "heartbeat received", hangGuard)
	for range 10 {
		require.NoError(t, p.Publish("heartbeat", []byte("publish_test_case")))
	}
	require.NoError(t, p.Publish("heartbeat", []byte("bad_test_case")))
	assert.Equal(t, append(repeated("publish_test_case", 11), "bad_test_case"), consumeBodies(t, n, "heartbeat", 12))
	assert.Equal(t, uint64(1), p.Stats().Connects, "one connection throughout")
}

// go-nsq's TestConfigSet, but for "tls1.3", which go-nsq refuses and this
// library accepts on purpose.
func TestGoNSQConfigSet(t *testing.T) {
	c := NewConfig()
	assert.Error(t, c.Set("not a real config value", struct{}{}))
	assert.Error(t, c.Set("tls_v1", "lol"))
	assert.NoError(t, c.Set("tls_v1", true))
	assert.NoError(t, c.Set("tls-insecure-skip-verify", true))
	assert.True(t, c.TlsConfig.InsecureSkipVerify)
	assert.NoError(t, c.Set("tls-min-version", "tls1.2"))
	// go-nsq: an error. Here: accepted.
	assert.NoError(t, c.Set("tls-min-version", "tls1.3"))
	assert.Equal(t, uint16(tls.VersionTLS13), c.TlsConfig.MinVersion)
	assert.NoError(t, c.Set("local_addr", &net.TCPAddr{}))
	assert.NoError(t, c.Set("local_addr", "1.2.3.4:27015"))
	assert.NoError(t, c.Set("dial_timeout", "5s"))
	assert.Equal(t, "1.2.3.4:27015", c.LocalAddr.String())
	assert.Equal(t, "*nsq.ExponentialStrategy", reflect.ValueOf(c.BackoffStrategy).Type().String())
	assert.NoError(t, c.Set("backoff_strategy", "full_jitter"))
	assert.Equal(t, "*nsq.FullJitterStrategy", reflect.ValueOf(c.BackoffStrategy).Type().String())
}

// go-nsq's TestConfigValidate, TestExponentialBackoff and
// TestFullJitterBackoff (with go-nsq's seeded source: the same durations).
func TestGoNSQConfigValidateAndBackoff(t *testing.T) {
	c := NewConfig()
	assert.NoError(t, c.Validate())
	c.DeflateLevel = 100
	assert.Error(t, c.Validate())

	attempts := []int{0, 1, 3, 5}
	exp := &ExponentialStrategy{cfg: NewConfig()}
	jitter := &FullJitterStrategy{cfg: NewConfig(), int64N: rand.New(rand.NewSource(99)).Int63n}
	var gotExp, gotJitter []time.Duration
	for _, a := range attempts {
		gotExp = append(gotExp, exp.Calculate(a))
		gotJitter = append(gotJitter, jitter.Calculate(a))
	}
	assert.Equal(t, []time.Duration{1 * time.Second, 2 * time.Second, 8 * time.Second, 32 * time.Second}, gotExp)
	assert.Equal(t, []time.Duration{724039541, 1603903257, 5232470547, 21467499218}, gotJitter)
}
