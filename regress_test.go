package nsq

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests for the guarantees of issue 8: each failed on the code
// before its fix.

// Bug 10: TryPublishAsync after Stop began returned ErrPendingFull ("retry
// later") when the limit was full, though no retry can succeed.
func TestTryPublishAsyncDuringStopIsStopped(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), testConfig(t, "max_pending", 1, "stop_timeout", "200ms"))
		s.Go(func(c *fakensqd.Conn) {
			c.Handshake(nil)
			c.ExpectPublish() // never answered: the one publish keeps the limit full
			c.ExpectClosed(hangGuard)
		})
		done := make(chan *ProducerTransaction, 1)
		require.NoError(t, p.PublishAsync("t", []byte("held"), done))

		stopped := make(chan struct{})
		go func() {
			p.Stop() // waits stop_timeout for the unanswered publish
			close(stopped)
		}()
		// A publish waiting for room returns once Stop has begun.
		assert.Same(t, ErrStopped, publishWithin(t, p, "t", "waits"))
		assert.Same(t, ErrStopped, p.TryPublishAsync("t", []byte("try"), done))

		recvWithin(t, stopped, "Stop")
		tx := recvWithin(t, done, "the held publish's result")
		assert.ErrorIs(t, tx.Error, ErrUnknownOutcome)
		s.Wait()
	})
}

// Bug 9: a message nsqd refused (ErrProtocol) was reported ErrNeverSent
// ("safe to retry") when the reconnect that followed failed: the failure of
// the queue overwrote its settled outcome.
func TestRefusedOutcomeSurvivesAFailedReconnect(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		const reason = "E_BAD_MESSAGE MPUB message too big 2000 > 1024"
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), nil)

		done := make(chan *ProducerTransaction, 3)
		for i, b := range [][]byte{[]byte("m0"), make([]byte, 2000), []byte("m2")} {
			require.NoError(t, p.PublishAsync("big", b, done, i))
		}
		synctest.Wait()

		c := s.Accept()
		c.Handshake(nil)
		require.Len(t, c.Expect("MPUB").Messages, 3)
		c.Error(reason)
		c.Close()
		// The reconnect fails during the handshake.
		s.Accept().Close()

		var txs []*ProducerTransaction
		for range 3 {
			txs = append(txs, recvWithin(t, done, "PublishAsync result"))
		}
		assert.ErrorIs(t, txs[0].Error, ErrNeverSent)
		assert.Equal(t, ErrProtocol{Reason: reason}, txs[1].Error, "nsqd's refusal stands")
		assert.ErrorIs(t, txs[2].Error, ErrNeverSent)
	})
}

// Bug 5: Flush with nothing pending dialled (waiting out any backoff) and,
// with nsqd down, returned the dial error; a Flush behind publishes that
// failed returned their connection error. Flush returns nil, ctx's error
// or ErrStopped, and never dials.
func TestFlushNeverDialsNorFailsWithTheConnection(t *testing.T) {
	p := newTestProducer(t, "127.0.0.1:1", nil) // nothing listens there
	within(t, hangGuard, "Flush", func() { require.NoError(t, p.Flush(t.Context())) })
	assert.Zero(t, p.Stats().ConnectFailures, "Flush with nothing pending dialled")

	done := make(chan *ProducerTransaction, 1)
	require.NoError(t, p.PublishAsync("t", []byte("x"), done))
	within(t, hangGuard, "Flush", func() { require.NoError(t, p.Flush(t.Context())) })
	assert.ErrorIs(t, recvWithin(t, done, "the publish's result").Error, ErrNeverSent)
	assert.Equal(t, uint64(1), p.Stats().ConnectFailures)

	// Nothing pending again: no dial, though a backoff is running.
	within(t, hangGuard, "Flush", func() { require.NoError(t, p.Flush(t.Context())) })
	assert.Equal(t, uint64(1), p.Stats().ConnectFailures)
}

// Bug 11, stats: a transaction that had headed an automatic batch and was
// sent again as a member of a larger one kept its old count, so
// Stats().Batches and BatchedMessages counted it as a batch of its own.
func TestStatsCountAResentBatchHeadOnce(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), nil)
		done := make(chan *ProducerTransaction, 4)

		require.NoError(t, p.PublishAsync("x", []byte("x"), done))
		c := s.Accept()
		c.Handshake(nil)
		assert.Equal(t, "x", bodyOf(c.ExpectPublish()))
		require.NoError(t, p.PublishAsync("t", []byte("a"), done))
		assert.Equal(t, "a", bodyOf(c.ExpectPublish()))
		// Two writes await answers: c and d wait in the next batch, c heading
		// an MPUB of two.
		require.NoError(t, p.PublishAsync("t", []byte("c"), done))
		require.NoError(t, p.PublishAsync("t", []byte("d"), done))
		synctest.Wait()
		c.Error("E_BAD_TOPIC PUB topic name x is not valid")
		c.Close()

		c = s.Accept()
		c.Handshake(nil)
		mpub := c.Expect("MPUB")
		assert.Equal(t, []string{"a", "c", "d"}, strs(mpub.Messages))
		c.OK()
		assert.IsType(t, ErrProtocol{}, recvWithin(t, done, "x's result").Error)
		for range 3 {
			assert.NoError(t, recvWithin(t, done, "result").Error)
		}
		st := p.Stats()
		assert.Equal(t, uint64(1), st.Batches)
		assert.Equal(t, uint64(3), st.BatchedMessages)
	})
}

// Bug 1: a Conn whose OnClose reached the router before its connection
// result was installed anyway, dead: nothing was written or answered again,
// publishers filled max_pending and Stop never returned. A server that
// answers IDENTIFY and closes did it within a few connections. Every
// publish must complete, and Stop must return.
func TestConnClosedBeforeInstalledIsNeverUsed(t *testing.T) {
	s := fakensqd.New(t)
	// No backoff: many connections, quickly.
	p := newTestProducer(t, s.Addr(), testConfig(t, "reconnect_backoff", 0, "max_reconnect_backoff", 0))
	done := make(chan *ProducerTransaction, 1)
	for i := range 100 {
		require.NoError(t, p.PublishAsync("t", []byte("x"), done, i))
		c := s.Accept()
		c.Handshake(nil)
		c.Close()
		tx := recvWithin(t, done, fmt.Sprintf("the result of publish %d", i))
		require.ErrorIs(t, tx.Error, ErrNotConnected, "publish %d", i)
	}
	within(t, hangGuard, "Stop", p.Stop)
}

// Bug 2: a successful handshake reset the failure count, so a server that
// accepts and then closes made the producer reconnect in a hot loop. A
// connection that ends before nsqd answered anything on it (and within
// provingTime) is a failed attempt: the next waits for the backoff.
func TestConnEndingBeforeAnAnswerBacksOff(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), testConfig(t,
			"reconnect_backoff", "1h", "max_reconnect_backoff", "1h", "stop_timeout", "100ms"))
		done := make(chan *ProducerTransaction, 2)
		require.NoError(t, p.PublishAsync("t", []byte("first"), done))
		c := s.Accept()
		c.Handshake(nil)
		c.Close()
		assert.ErrorIs(t, recvWithin(t, done, "the first result").Error, ErrNotConnected)

		// Within the backoff: no connection attempt; Stop's deadline fails it.
		require.NoError(t, p.PublishAsync("t", []byte("second"), done))
		within(t, hangGuard, "Stop", p.Stop)
		second := recvWithin(t, done, "the second result").Error
		assert.ErrorIs(t, second, ErrNeverSent)
		assert.ErrorIs(t, second, errStopTimeout, "no attempt was made within the backoff")
		// One attempt only. (It counts as a connect failure when its OnClose
		// came before its connection result: it was never installed.)
		st := p.Stats()
		assert.Equal(t, uint64(1), st.Connects+st.ConnectFailures, "no second attempt")
	})
}

// Bug 8: after one nsqd said "too big 2000 > 1024", every later 2000-byte
// publish was refused at the call, forever, even on a new connection to an
// nsqd restarted with a larger limit. The limit lives with the connection
// that stated it; bodies over it that were queued then fail at once.
func TestLearnedLimitLivesWithItsConnection(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		const reason = "E_BAD_MESSAGE PUB message too big 2000 > 1024"
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), nil)
		big := make([]byte, 2000)

		done := make(chan *ProducerTransaction, 2)
		require.NoError(t, p.PublishAsync("t", big, done, "refused"))
		c := s.Accept()
		c.Handshake(nil)
		assert.Len(t, c.ExpectPublish().Body, 2000)
		// Queued behind it, unsent, when nsqd states its limit.
		require.NoError(t, p.PublishAsync("t", big, done, "queued"))
		synctest.Wait()
		c.Error(reason)
		c.Close()
		assert.Equal(t, ErrProtocol{Reason: reason}, recvWithin(t, done, "the refused one").Error)
		queued := recvWithin(t, done, "the queued one").Error
		assert.ErrorIs(t, queued, ErrTooLarge)
		assert.ErrorIs(t, queued, ErrNeverSent)

		// nsqd restarted with a larger limit.
		s.Go(func(c *fakensqd.Conn) {
			c.Handshake(nil)
			c.ServePublishes(2)
		})
		require.NoError(t, publishWithin(t, p, "t", "small")) // the new connection is in use
		within(t, hangGuard, "Publish", func() { require.NoError(t, p.Publish("t", big)) })
		s.Wait()
	})
}

// Sim finding F5: at stop_timeout the queue failed before the closing
// connection handed its prepared batch (older) back, so a doneChan got a
// newer result before an older one. Results stay in order.
func TestStopTimeoutKeepsResultsInOrder(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), testConfig(t, "stop_timeout", "100ms"))
		done := make(chan *ProducerTransaction, 4)

		require.NoError(t, p.PublishAsync("a", []byte("A"), done, "A"))
		c := s.Accept()
		c.Handshake(nil)
		c.ExpectPublish()
		require.NoError(t, p.PublishAsync("b", []byte("B"), done, "B"))
		c.ExpectPublish()
		// Two writes await answers that never come: C waits in the next batch,
		// a Flush barrier behind it stops that batch, D waits in the queue.
		require.NoError(t, p.PublishAsync("c", []byte("C"), done, "C"))
		// The Flush gives up at once; its barrier stays in the queue.
		ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
		defer cancel()
		assert.ErrorIs(t, p.Flush(ctx), context.DeadlineExceeded)
		require.NoError(t, p.PublishAsync("d", []byte("D"), done, "D"))
		synctest.Wait()

		within(t, hangGuard, "Stop", p.Stop)
		var got []any
		for range 4 {
			tx := recvWithin(t, done, "result")
			assert.ErrorIs(t, tx.Error, ErrNotConnected)
			got = append(got, tx.Args[0])
		}
		assert.Equal(t, []any{"A", "B", "C", "D"}, got)
	})
}

// Bug 3 and item 2: a context call prepared behind two writes in flight,
// whose context ended, was written afterwards, with the bytes the caller
// had put in its buffer since. It is never handed to the writer, and the
// call says so: ErrNeverSent, beside the context's error.
func TestContextEndedBeforeHandoffIsNeverSent(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), nil)
		done := make(chan *ProducerTransaction, 2)
		require.NoError(t, p.PublishAsync("a", []byte("a"), done))
		c := s.Accept()
		c.Handshake(nil)
		assert.Equal(t, "a", bodyOf(c.ExpectPublish()))
		require.NoError(t, p.PublishAsync("b", []byte("b"), done))
		assert.Equal(t, "b", bodyOf(c.ExpectPublish()))

		// Two writes await answers: these wait for the next batch.
		ctx, cancel := context.WithCancel(t.Context())
		body, bodies := []byte("ctx"), [][]byte{[]byte("ctx1"), []byte("ctx2")}
		res := make(chan error, 2)
		go func() { res <- p.PublishContext(ctx, "c", body) }()
		go func() { res <- p.MultiPublishContext(ctx, "c", bodies) }()
		synctest.Wait() // both calls hold room, and the router has taken them
		require.Equal(t, int64(4), p.Stats().Pending, "a, b and the two context calls")
		cancel()
		for range 2 {
			err := recvWithin(t, res, "the cancelled call")
			assert.ErrorIs(t, err, ErrNeverSent)
			assert.ErrorIs(t, err, context.Canceled)
		}
		// The caller reuses its buffers.
		copy(body, "!!!")
		copy(bodies[0], "!!!!")

		c.OK()
		c.OK()
		after := publishInBackground(p, "d", "after")
		assert.Equal(t, "after", bodyOf(c.ExpectPublish()), "the cancelled publishes were sent")
		c.OK()
		assert.NoError(t, recvWithin(t, after, "Publish"))
		for range 2 {
			assert.NoError(t, recvWithin(t, done, "result").Error)
		}
		assert.Equal(t, uint64(3), p.Stats().NeverSent, "a PUB and an MPUB of 2")
	})
}

// Bug 7 and item 2: a context call returned when its context ended while
// the write goroutine was still copying its body to the socket; the caller
// changed the body, and nsqd received the caller's new bytes. The call
// returns once the writer is done with the body, and says the publish was
// written: ErrUnknownOutcome, beside the context's error.
func TestContextCallNeverReturnsWhileItsBodyIsWritten(t *testing.T) {
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), nil)
	body := bytes.Repeat([]byte("b"), 16<<20)
	ctx, cancel := context.WithCancel(t.Context())
	res := make(chan error, 1)
	go func() {
		err := p.PublishContext(ctx, "big", body)
		// The caller may reuse it now. (From the end: the part a writer
		// still busy with it would read last.)
		for i := len(body) - 1; i >= 0; i-- {
			body[i] = '!'
		}
		res <- err
	}()
	c := s.Accept()
	c.Handshake(nil)
	nc := c.NetConn()
	nc.SetReadDeadline(time.Now().Add(hangGuard))
	wire := make([]byte, len("PUB big\n")+4+len(body))
	_, err := io.ReadFull(nc, wire[:1]) // the write goroutine has begun
	require.NoError(t, err)
	cancel() // while most of the body is still to be written
	_, err = io.ReadFull(nc, wire[1:])
	require.NoError(t, err)
	assert.Equal(t, "PUB big\n", string(wire[:8]))
	assert.Equal(t, -1, bytes.IndexByte(wire[12:], '!'), "nsqd received bytes the caller wrote after the call returned")

	err = recvWithin(t, res, "PublishContext")
	assert.ErrorIs(t, err, ErrUnknownOutcome)
	assert.ErrorIs(t, err, context.Canceled)
	c.OK() // it is stored after all
}

// Bug 6: results waiting for a doneChan nobody reads kept their room in the
// producer-wide max_pending, so once it filled every other caller's
// Publish blocked. They hold back only the publishers to that channel, in
// a backlog bounded like max_pending.
func TestUnreadDoneChanHoldsBackOnlyItsPublishers(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), testConfig(t, "max_pending", 8))
	unread := make(chan *ProducerTransaction) // not read for now
	for i := range 8 {
		require.NoError(t, p.PublishAsync("unread", []byte("x"), unread, i))
	}
	// Another caller is not held back; its answer comes after theirs.
	require.NoError(t, publishWithin(t, p, "other", "y"))
	assert.Zero(t, p.Stats().Pending)

	// The unread channel's backlog is full: its publishers wait.
	assert.Same(t, ErrPendingFull, p.TryPublishAsync("unread", []byte("x"), unread))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, p.PublishAsyncContext(ctx, "unread", []byte("x"), unread), context.DeadlineExceeded)
	other := make(chan *ProducerTransaction, 1)
	require.NoError(t, p.TryPublishAsync("other", []byte("z"), other))
	assert.NoError(t, recvWithin(t, other, "the other channel's result").Error)

	// Read: the results come in order, and the channel's publishers go on.
	for i := range 8 {
		tx := recvWithin(t, unread, "an unread result")
		require.NoError(t, tx.Error)
		assert.Equal(t, i, tx.Args[0])
	}
	require.NoError(t, p.PublishAsync("unread", []byte("x"), unread, 8))
	assert.Equal(t, 8, recvWithin(t, unread, "the next result").Args[0])
}

// Item 2, a written publish nsqd did not execute: a context call written
// behind a command nsqd refused is queued to be sent again; when its
// context ends then, it is never sent again, and the call says so
// (ErrNeverSent: nsqd executed nothing of it), not ErrUnknownOutcome.
func TestContextEndedWhileQueuedAgainIsNeverSent(t *testing.T) {
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), nil)
	done := make(chan *ProducerTransaction, 1)
	require.NoError(t, p.PublishAsync("x", []byte("x"), done))
	c := s.Accept()
	c.Handshake(nil)
	assert.Equal(t, "x", bodyOf(c.ExpectPublish()))

	ctx, cancel := context.WithCancel(t.Context())
	res := make(chan error, 1)
	go func() { res <- p.PublishContext(ctx, "c", []byte("c")) }()
	assert.Equal(t, "c", bodyOf(c.ExpectPublish()))
	c.Error("E_BAD_TOPIC PUB topic name x is not valid") // c is not executed
	c.Close()
	assert.IsType(t, ErrProtocol{}, recvWithin(t, done, "x's result").Error)

	cancel() // c waits in the queue for the next connection
	err := recvWithin(t, res, "PublishContext")
	assert.ErrorIs(t, err, ErrNeverSent)
	assert.ErrorIs(t, err, context.Canceled)

	after := publishInBackground(p, "d", "after")
	c = s.Accept()
	c.Handshake(nil)
	assert.Equal(t, "after", bodyOf(c.ExpectPublish()), "the cancelled publish was sent again")
	c.OK()
	assert.NoError(t, recvWithin(t, after, "Publish"))
}
