package nsq

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPublishContextCancelledBeforeEnqueue(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	assert.Same(t, context.Canceled, p.PublishContext(ctx, "ctx", []byte("x")))
	assert.Same(t, context.Canceled, p.MultiPublishContext(ctx, "ctx", [][]byte{[]byte("x")}))
	assert.Same(t, context.Canceled, p.DeferredPublishContext(ctx, "ctx", time.Second, []byte("x")))
	done := make(chan *ProducerTransaction, 1)
	assert.Same(t, context.Canceled, p.PublishAsyncContext(ctx, "ctx", []byte("x"), done))
	assert.Same(t, context.Canceled, p.MultiPublishAsyncContext(ctx, "ctx", [][]byte{[]byte("x")}, done))
	assert.Same(t, context.Canceled, p.DeferredPublishAsyncContext(ctx, "ctx", time.Second, []byte("x"), done))
	assert.Same(t, context.Canceled, p.Flush(ctx))

	require.NoError(t, p.PublishContext(t.Context(), "ctx", []byte("y")))
	assert.Len(t, done, 0)
	assert.Equal(t, int64(1), topicCount(t, n, "ctx"))
	assert.Equal(t, uint64(1), p.Stats().Published)
}

// A wait cancelled after the publish was written returns at once; nsqd's
// answer, arriving later, is still matched to it, so the next publish gets
// its own answer.
func TestPublishContextCancelledWhileWaiting(t *testing.T) {
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), nil)
	c := make(chan *fakensqd.Conn, 1)
	s.Go(func(conn *fakensqd.Conn) {
		conn.Handshake(nil)
		assert.Equal(t, "first", string(conn.Expect("PUB").Body))
		c <- conn
	})

	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- p.PublishContext(ctx, "ctx", []byte("first")) }()
	conn := <-c // the PUB is on the wire, unanswered
	cancel()
	var err error
	within(t, 5*time.Second, "the cancelled wait", func() { err = <-errc })
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "may still succeed")

	second := make(chan error, 1)
	go func() { second <- p.Publish("ctx", []byte("second")) }()
	assert.Equal(t, "second", string(conn.Expect("PUB").Body))
	conn.OK()                             // answers "first"
	conn.Error("E_PUB_FAILED PUB failed") // answers "second"
	within(t, 5*time.Second, "the second publish", func() { err = <-second })
	var perr ErrProtocol
	require.ErrorAs(t, err, &perr, "the second publish gets the second answer")
	assert.Equal(t, "E_PUB_FAILED PUB failed", perr.Reason)
	assert.Equal(t, uint64(1), p.Stats().Published, "the abandoned publish succeeded")
}

// A publish whose context ends while it is still queued (here: while the
// connection is being made) is never sent.
func TestPublishContextCancelledWhileConnecting(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), nil)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- p.PublishContext(ctx, "ctx", []byte("abandoned")) }()
		conn := s.Accept() // connected; the fake holds the handshake until the publish gives up
		var err error
		within(t, 5*time.Second, "PublishContext while connecting", func() { err = <-errc })
		require.ErrorIs(t, err, context.DeadlineExceeded)

		second := make(chan error, 1)
		go func() { second <- p.Publish("ctx", []byte("kept")) }()
		conn.Handshake(nil)
		cmd := conn.Expect("PUB")
		assert.Equal(t, "kept", string(cmd.Body), "the abandoned publish must not be sent")
		conn.OK()
		within(t, 5*time.Second, "Publish", func() { err = <-second })
		require.NoError(t, err)
		assert.Equal(t, uint64(1), p.Stats().NeverSent)
	})
}

func TestBackpressure(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), testConfig(t, "max_pending", 2, "auto_batch", false))
		done := make(chan *ProducerTransaction, 3)
		require.NoError(t, p.PublishAsync("bp", []byte("1"), done))
		require.NoError(t, p.PublishAsync("bp", []byte("2"), done))
		conn := s.Accept()
		conn.Handshake(nil)
		conn.Expect("PUB")
		conn.Expect("PUB")

		assert.Same(t, ErrPendingFull, p.TryPublishAsync("bp", []byte("3"), done))
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		assert.Equal(t, context.DeadlineExceeded, p.PublishAsyncContext(ctx, "bp", []byte("3"), done))
		st := p.Stats()
		assert.Equal(t, int64(2), st.Pending)
		assert.Equal(t, int64(2), st.PendingBytes)
		assert.Equal(t, uint64(1), st.Refused)

		blocked := make(chan error, 1)
		go func() { blocked <- p.PublishAsync("bp", []byte("3"), done) }()
		synctest.Wait() // the producer has had every chance to take it
		select {
		case err := <-blocked:
			t.Fatalf("PublishAsync returned %v while 2 publishes were pending", err)
		default: // and did not
		}
		conn.OK()
		var err error
		within(t, 5*time.Second, "the blocked PublishAsync", func() { err = <-blocked })
		require.NoError(t, err)
		conn.OK()
		assert.Equal(t, "3", string(conn.Expect("PUB").Body))
		conn.OK()
		for i := 0; i < 3; i++ {
			assert.NoError(t, (<-done).Error)
		}
	})
}

func TestFlush(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), nil)
	require.NoError(t, p.Flush(t.Context()), "Flush with nothing published")
	for i := 0; i < 1000; i++ {
		require.NoError(t, p.PublishAsync("flush", []byte("x"), nil))
	}
	require.NoError(t, p.Flush(t.Context()))
	assert.Equal(t, int64(1000), topicCount(t, n, "flush"))
	assert.Equal(t, uint64(1000), p.Stats().Published)
	assert.Equal(t, int64(0), p.Stats().Pending)
	p.Stop()
	assert.Same(t, ErrStopped, p.Flush(t.Context()))
}

func TestStatsCounters(t *testing.T) {
	n := nsqdtest.Start(t, "--max-msg-size=1024")
	p := newTestProducer(t, n.TCPAddr(), nil)
	for i := 0; i < 10; i++ {
		require.NoError(t, p.Publish("stats", []byte("0123456789")))
	}
	require.NoError(t, p.MultiPublish("stats", [][]byte{[]byte("abc"), []byte("de")}))
	require.ErrorIs(t, p.Publish("bad topic", []byte("x")), ErrInvalidTopic)
	require.Error(t, p.Publish("stats", make([]byte, 2000)))
	require.NoError(t, p.DeferredPublish("stats", time.Millisecond, []byte("z")))

	st := p.Stats()
	assert.Equal(t, uint64(13), st.Published)
	assert.Equal(t, uint64(10*10+5+1), st.PublishedBytes)
	assert.Equal(t, uint64(1), st.Refused)
	assert.Equal(t, map[string]uint64{"E_BAD_MESSAGE": 1}, st.NsqdErrors)
	assert.Equal(t, uint64(0), st.NeverSent)
	assert.Equal(t, uint64(0), st.UnknownOutcome)
	assert.Equal(t, uint64(2), st.Connects, "nsqd closed the connection after E_BAD_MESSAGE")
	assert.Equal(t, uint64(1), st.Reconnects)
	assert.Equal(t, int64(0), st.Pending)
	assert.Positive(t, st.LatencyP50)
	assert.GreaterOrEqual(t, st.LatencyP99, st.LatencyP50)
	assert.Equal(t, uint64(0), st.Batches, "sequential sync publishes are never batched")

	// A burst of async publishes to one topic goes out in batches.
	done := make(chan *ProducerTransaction, 2000)
	for i := 0; i < 2000; i++ {
		require.NoError(t, p.PublishAsync("stats", []byte("b"), done))
	}
	for i := 0; i < 2000; i++ {
		require.NoError(t, (<-done).Error)
	}
	st = p.Stats()
	assert.Equal(t, uint64(2013), st.Published)
	assert.Positive(t, st.Batches)
	assert.LessOrEqual(t, st.BatchedMessages, uint64(2000))
	assert.InDelta(t, float64(st.BatchedMessages)/float64(st.Batches), st.MeanBatchSize, 1e-9)
	assert.Equal(t, int64(2013), topicCount(t, n, "stats"))
}

func TestSlogLogger(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	p, err := NewProducer("127.0.0.1:1", testConfig(t, "dial_timeout", "200ms"))
	require.NoError(t, err)
	p.SetLogger(NewSlogLogger(l), LogLevelInfo)
	err = p.Publish("slog", []byte("x"))
	require.ErrorIs(t, err, ErrNeverSent)
	p.Stop()
	requireNoLeaks(t)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	assert.Equal(t, `level=INFO msg="(127.0.0.1:1) connecting to nsqd" producer=`+strconv.FormatInt(p.logs.id, 10)+` nsqd=127.0.0.1:1`, lines[0])
	assert.True(t, strings.HasPrefix(lines[1], `level=ERROR msg="(127.0.0.1:1) error connecting to nsqd - dial tcp 127.0.0.1:1: connect: connection refused`), lines[1])

	// The plain logger interface works too, taking the level from the tag.
	buf.Reset()
	require.NoError(t, NewSlogLogger(l).Output(2, "WRN    7 something odd"))
	assert.Equal(t, "level=WARN msg=\"something odd\"\n", buf.String())
	assert.False(t, errors.Is(err, ErrUnknownOutcome))
}
