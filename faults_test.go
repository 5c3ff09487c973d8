package nsq

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"

	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Fault tests: each drives the producer against the scripted fake nsqd,
// one fault per test, and checks the exact outcome of every publish.

// hangGuard bounds every blocking call of these tests: a hang fails
// instead of hanging.
const hangGuard = 10 * time.Second

// publishWithin runs p.Publish under the hang guard.
func publishWithin(t *testing.T, p *Producer, topic, body string) error {
	t.Helper()
	var err error
	within(t, hangGuard, "Publish("+topic+", "+body+")", func() { err = p.Publish(topic, []byte(body)) })
	return err
}

// publishInBackground starts p.Publish on its own goroutine; its result
// arrives on the returned channel.
func publishInBackground(p *Producer, topic, body string) <-chan error {
	res := make(chan error, 1)
	go func() { res <- p.Publish(topic, []byte(body)) }()
	return res
}

// recvWithin waits for a value on ch under the hang guard.
func recvWithin[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	var v T
	within(t, hangGuard, what, func() { v = <-ch })
	return v
}

// producerLogLines returns the producer's log lines from now on.
func producerLogLines(p *Producer) <-chan string {
	return p.logs.logger[LogLevelDebug].(*testLogger).watch(256)
}

func bodyOf(c fakensqd.Command) string { return string(c.Body) }

// 1. Heartbeats are answered with exactly one NOP, and never taken for the
// answer to a publish.
func TestFaultHeartbeat(t *testing.T) {
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), nil)

	// A heartbeat between a PUB and its OK.
	res := publishInBackground(p, "hb", "first")
	c := s.Accept()
	c.Handshake(nil)
	assert.Equal(t, "first", bodyOf(c.Expect("PUB")))
	c.Heartbeat()
	c.Expect("NOP")
	c.OK()
	require.NoError(t, recvWithin(t, res, "Publish"))

	// A heartbeat on an idle connection: the next command is the NOP, and
	// the one after it the next PUB (no second NOP).
	c.Heartbeat()
	c.Expect("NOP")
	res = publishInBackground(p, "hb", "second")
	assert.Equal(t, "second", bodyOf(c.Expect("PUB")))
	c.OK()
	require.NoError(t, recvWithin(t, res, "Publish"))

	st := p.Stats()
	assert.Equal(t, uint64(2), st.Heartbeats)
	assert.Equal(t, uint64(2), st.Published)
	assert.Equal(t, uint64(1), st.Connects, "heartbeats must not cost the connection")
}

// 2. An error frame fails only the command it answers: what was answered OK
// before it succeeded, what was pipelined behind it is sent again on a new
// connection. nsqd closes the connection after the error frame; with
// commands it has not read, the close is a reset.
func TestFaultErrorFrameIsolation(t *testing.T) {
	const reason = "E_BAD_MESSAGE PUB message too big 2000 > 1024"
	for _, tc := range []struct {
		name string
		end  func(c *fakensqd.Conn)
	}{
		{"close", (*fakensqd.Conn).Close},
		{"reset", (*fakensqd.Conn).Reset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fakensqd.New(t)
			p := newTestProducer(t, s.Addr(), testConfig(t, "auto_batch", false))

			s.Go(func(c *fakensqd.Conn) {
				c.Handshake(nil)
				// Read m0 and m1 only: the producer may hold m2 back until
				// an answer comes (it keeps at most two writes unanswered).
				// Whether m2 was written behind m1 or not, nsqd never
				// executes it.
				assert.Equal(t, "m0", bodyOf(c.Expect("PUB")))
				assert.Equal(t, "m1", bodyOf(c.Expect("PUB")))
				c.OK()
				c.Error(reason)
				tc.end(c)
			})
			s.Go(func(c *fakensqd.Conn) {
				c.Handshake(nil)
				assert.Equal(t, "m2", bodyOf(c.Expect("PUB")), "only the command nsqd never executed is sent again")
				c.OK()
			})

			done := make(chan *ProducerTransaction, 3)
			for i, b := range []string{"m0", "m1", "m2"} {
				require.NoError(t, p.PublishAsync("iso", []byte(b), done, i))
			}
			var txs []*ProducerTransaction
			for range 3 {
				txs = append(txs, recvWithin(t, done, "PublishAsync result"))
			}
			s.Wait()

			for i, tx := range txs {
				assert.Equal(t, []any{i}, tx.Args, "results in publish order")
			}
			assert.NoError(t, txs[0].Error)
			var perr ErrProtocol
			require.ErrorAs(t, txs[1].Error, &perr)
			assert.Equal(t, ErrProtocol{Reason: reason}, txs[1].Error, "nsqd's error, unwrapped")
			assert.Equal(t, "E_BAD_MESSAGE", perr.Code())
			assert.NoError(t, txs[2].Error)

			st := p.Stats()
			assert.Equal(t, uint64(2), st.Connects)
			assert.Equal(t, uint64(2), st.Published)
			assert.Equal(t, map[string]uint64{"E_BAD_MESSAGE": 1}, st.NsqdErrors)
			assert.Zero(t, st.UnknownOutcome+st.NeverSent)
		})
	}
}

// 3. An automatic MPUB batch that nsqd refuses as a whole is split: its
// messages are sent again one by one, so that only the bad one fails.
func TestFaultAutomaticBatchSplit(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		const batchReason = "E_BAD_MESSAGE MPUB message too big 2000 > 1024"
		const reason = "E_BAD_MESSAGE PUB message too big 2000 > 1024"
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), nil) // auto_batch is on by default

		done := make(chan *ProducerTransaction, 3)
		for i, b := range []string{"m0", "m1", "m2"} {
			require.NoError(t, p.PublishAsync("split", []byte(b), done, i))
		}
		// All three are queued before the connection is up: they leave as one
		// automatic batch.
		synctest.Wait() // the router has taken them all

		c := s.Accept()
		c.Handshake(nil)
		mpub := c.Expect("MPUB")
		assert.Equal(t, []string{"split"}, mpub.Params)
		require.Len(t, mpub.Messages, 3)
		assert.Equal(t, []string{"m0", "m1", "m2"}, strs(mpub.Messages))
		c.Error(batchReason)
		c.Close()

		c = s.Accept()
		c.Handshake(nil)
		var got []string
		for range 3 {
			got = append(got, bodyOf(c.Expect("PUB")))
		}
		assert.Equal(t, []string{"m0", "m1", "m2"}, got, "the batch is resent as single PUBs")
		c.OK()
		c.Error(reason)
		c.Close()

		c = s.Accept()
		c.Handshake(nil)
		assert.Equal(t, "m2", bodyOf(c.Expect("PUB")), "a split message stays unbatched")
		c.OK()

		var txs []*ProducerTransaction
		for range 3 {
			txs = append(txs, recvWithin(t, done, "PublishAsync result"))
		}
		for i, tx := range txs {
			assert.Equal(t, []any{i}, tx.Args, "results in publish order")
		}
		assert.NoError(t, txs[0].Error)
		assert.Equal(t, ErrProtocol{Reason: reason}, txs[1].Error)
		assert.NoError(t, txs[2].Error)

		st := p.Stats()
		assert.Equal(t, uint64(3), st.Connects)
		assert.Equal(t, uint64(1), st.Batches)
		assert.Equal(t, uint64(3), st.BatchedMessages)
		assert.Equal(t, map[string]uint64{"E_BAD_MESSAGE": 1}, st.NsqdErrors, "the refused batch fails no publish by itself")
	})
}

// 4. and 5. An answer with no command pending is a protocol violation: the
// producer closes the connection, says why in its log, and reconnects for
// the next publish.
func TestFaultAnswerWithNothingPending(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra func(c *fakensqd.Conn)
		log   string
	}{
		{"response", func(c *fakensqd.Conn) { c.OK() },
			"closing the connection: nsq: bad frame from server: nsqd answered OK with no command pending"},
		{"error", func(c *fakensqd.Conn) { c.Error("E_INVALID x") },
			"closing the connection: nsq: nsqd sent an error with no command pending: E_INVALID x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fakensqd.New(t)
			p := newTestProducer(t, s.Addr(), nil)
			lines := producerLogLines(p)

			s.Go(func(c *fakensqd.Conn) {
				c.Handshake(nil)
				c.Expect("PUB")
				c.OK()
				tc.extra(c)
				c.ExpectClosed(5 * time.Second)
			})
			require.NoError(t, publishWithin(t, p, "extra", "served"))
			s.Wait()
			waitLine(t, lines, tc.log, hangGuard)

			s.Go(func(c *fakensqd.Conn) {
				c.Handshake(nil)
				assert.Equal(t, "after", bodyOf(c.Expect("PUB")))
				c.OK()
			})
			require.NoError(t, publishWithin(t, p, "extra", "after"))
			s.Wait()
			st := p.Stats()
			assert.Equal(t, uint64(2), st.Connects)
			assert.Equal(t, uint64(2), st.Published)
		})
	}
}

// 6. Half a frame, then the connection closes: the publish in flight has an
// unknown outcome, and the error says the stream ended inside a frame.
func TestFaultHalfFrameThenClose(t *testing.T) {
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), nil)

	s.Go(func(c *fakensqd.Conn) {
		c.Handshake(nil)
		c.Expect("PUB")
		c.WriteRaw(fakensqd.AppendFrame(nil, fakensqd.FrameTypeResponse, []byte("OK"))[:6])
		c.Close()
	})
	err := publishWithin(t, p, "half", "x")
	s.Wait()

	require.ErrorIs(t, err, ErrUnknownOutcome)
	assert.ErrorIs(t, err, ErrNotConnected)
	assert.NotErrorIs(t, err, ErrNeverSent)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Equal(t, "not connected: connection lost before nsqd answered, outcome unknown: nsq: nsqd at "+s.Addr()+" closed the connection in the middle of a frame: unexpected EOF", err.Error())
	assert.Equal(t, uint64(1), p.Stats().UnknownOutcome)
}

// 7. A garbage frame size is refused before anything is allocated for it.
func TestFaultHugeFrameSize(t *testing.T) {
	const size = 1<<31 - 1
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), nil)

	s.Go(func(c *fakensqd.Conn) {
		c.Handshake(nil)
		c.Expect("PUB")
		c.WriteRaw([]byte{0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 'O', 'K'})
		c.ExpectClosed(5 * time.Second)
	})

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := publishWithin(t, p, "huge", "x")
	runtime.ReadMemStats(&after)
	s.Wait()

	require.ErrorIs(t, err, ErrUnknownOutcome)
	var ferr *FrameError
	require.ErrorAs(t, err, &ferr)
	assert.Equal(t, int64(size), ferr.Size)
	assert.Equal(t, "nsq: bad frame from server: frame size 2147483647 is over the 33554432-byte limit (Config.MaxFrameSize); is the address an nsqd TCP port?", ferr.Error())
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(16<<20), "bytes allocated while failing")
}

// 8. Frames a producer cannot use tear the connection down with a
// *FrameError; the publish in flight has an unknown outcome, and the next
// one goes out on a new connection.
func TestFaultBadFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
		want FrameError
	}{
		{"size_2", []byte{0, 0, 0, 2, 0, 0},
			FrameError{Size: 2, Reason: "frame size 2 is smaller than its 4-byte type"}},
		{"size_0", []byte{0, 0, 0, 0},
			FrameError{Size: 0, Reason: "frame size 0 is smaller than its 4-byte type"}},
		{"over_max_frame_size", []byte{0x02, 0, 0, 1, 0, 0, 0, 0},
			FrameError{Size: 32<<20 + 1, Reason: "frame size 33554433 is over the 33554432-byte limit (Config.MaxFrameSize); is the address an nsqd TCP port?"}},
		{"unknown_type_7", fakensqd.AppendFrame(nil, 7, []byte("OK")),
			FrameError{Reason: "unexpected frame type 7 on a producer connection"}},
		{"message_frame", fakensqd.AppendFrame(nil, fakensqd.FrameTypeMessage, make([]byte, 26+5)),
			FrameError{Reason: "unexpected frame type 2 on a producer connection"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inBubble(t, func(t *testing.T) {
				s := fakensqd.NewMem(t)
				p := newTestProducer(t, s.Addr(), nil)

				s.Go(func(c *fakensqd.Conn) {
					c.Handshake(nil)
					c.Expect("PUB")
					c.WriteRaw(tc.raw)
					c.ExpectClosed(5 * time.Second)
				})
				s.Go(func(c *fakensqd.Conn) {
					c.Handshake(nil)
					assert.Equal(t, "after", bodyOf(c.Expect("PUB")))
					c.OK()
				})

				err := publishWithin(t, p, "bad", "x")
				require.ErrorIs(t, err, ErrUnknownOutcome)
				var ferr *FrameError
				require.ErrorAs(t, err, &ferr)
				assert.Equal(t, tc.want, *ferr)
				assert.Equal(t, "not connected: connection lost before nsqd answered, outcome unknown: nsq: bad frame from server: "+tc.want.Reason, err.Error())

				require.NoError(t, publishWithin(t, p, "bad", "after"))
				s.Wait()
				assert.Equal(t, uint64(2), p.Stats().Connects)
			})
		})
	}
}

// 9. An HTTP server at the address: the handshake reads its "HTTP/1.1 400"
// and the publish fails, never sent, with an error that says so.
func TestFaultHTTPServer(t *testing.T) {
	var handled atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handled.Add(1) }))
	t.Cleanup(srv.Close)

	// What the producer reads: Go's server answers the magic and IDENTIFY
	// line with a 400.
	p := newTestProducer(t, srv.Listener.Addr().String(), nil)
	err := publishWithin(t, p, "http", "x")

	require.ErrorIs(t, err, ErrNeverSent)
	assert.ErrorIs(t, err, ErrNotConnected)
	var ferr *FrameError
	require.ErrorAs(t, err, &ferr)
	assert.Equal(t, `nsq: bad frame from server: the server answered "HTTP...": is this nsqd's HTTP port instead of its TCP port?`, ferr.Error())
	assert.Contains(t, err.Error(), "HTTP")
	assert.Zero(t, handled.Load(), "the HTTP server saw no valid request")
	assert.Equal(t, uint64(1), p.Stats().ConnectFailures)
}

// TestFaultHTTPServerAnswers checks the premise of TestFaultHTTPServer:
// Go's HTTP server answers what a producer sends first with a 400.
func TestFaultHTTPServerAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	cmd, err := Identify(map[string]any{"feature_negotiation": true})
	require.NoError(t, err)
	var req bytes.Buffer
	req.Write(MagicV2)
	cmd.WriteTo(&req)

	var resp []byte
	within(t, hangGuard, "talking to the HTTP server", func() {
		nc, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 5*time.Second)
		if err != nil {
			t.Errorf("dial: %v", err)
			return
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		nc.Write(req.Bytes())
		resp, _ = io.ReadAll(nc)
	})
	assert.True(t, bytes.HasPrefix(resp, []byte("HTTP/1.1 400 Bad Request")), "got %q", resp)
}

// 10. nsqd refuses IDENTIFY: ErrIdentify with its text, never sent.
func TestFaultIdentifyRefused(t *testing.T) {
	const reason = "E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid"
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), testConfig(t, "heartbeat_interval", "100ms"))

	s.Go(func(c *fakensqd.Conn) {
		c.ReadMagic()
		c.Expect("IDENTIFY")
		c.Error(reason)
		c.Close()
	})
	err := publishWithin(t, p, "ident", "x")
	s.Wait()

	var ierr ErrIdentify
	require.ErrorAs(t, err, &ierr)
	assert.Equal(t, reason, ierr.Reason)
	assert.ErrorIs(t, err, ErrNeverSent)
	assert.ErrorIs(t, err, ErrNotConnected)
	assert.Equal(t, ErrIdentify{Reason: reason}, err, "the value go-nsq returns")
	st := p.Stats()
	assert.Equal(t, uint64(1), st.ConnectFailures)
	assert.Equal(t, uint64(1), st.NeverSent)
}

// 11., 12., 14. and 15. (a server that stops reading, one that never
// answers, Stop while an answer is withheld, Stop while connecting) are
// timing: they run on virtual time in synctest_test.go (TestVirtual...).

// 13. A connection reset with a publish in flight: unknown outcome; the next
// publish goes out on a new connection.
func TestFaultConnectionReset(t *testing.T) {
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), nil)

	s.Go(func(c *fakensqd.Conn) {
		c.Handshake(nil)
		assert.Equal(t, "lost", bodyOf(c.Expect("PUB")))
		c.Reset()
	})
	s.Go(func(c *fakensqd.Conn) {
		c.Handshake(nil)
		assert.Equal(t, "after", bodyOf(c.Expect("PUB")))
		c.OK()
	})

	err := publishWithin(t, p, "reset", "lost")
	require.ErrorIs(t, err, ErrUnknownOutcome)
	assert.ErrorIs(t, err, syscall.ECONNRESET)

	require.NoError(t, publishWithin(t, p, "reset", "after"))
	s.Wait()
	st := p.Stats()
	assert.Equal(t, uint64(2), st.Connects)
	assert.Equal(t, uint64(1), st.UnknownOutcome)
	assert.Equal(t, uint64(1), st.Published)
}

// 16. A doneChan nobody reads never blocks the router: a sync publish on the
// same producer still completes, and the unread results wait, in order.
func TestFaultDoneChanNobodyReads(t *testing.T) {
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), testConfig(t, "auto_batch", false))

	s.Go(func(c *fakensqd.Conn) {
		c.Handshake(nil)
		cmds := c.ServePublishes(6)
		var got []string
		for _, cmd := range cmds {
			got = append(got, bodyOf(cmd))
		}
		assert.Equal(t, []string{"a0", "a1", "a2", "a3", "a4", "sync"}, got)
	})

	unread := make(chan *ProducerTransaction) // unbuffered, not read until the end
	for i := range 5 {
		require.NoError(t, p.PublishAsync("unread", []byte("a"+string(rune('0'+i))), unread, i))
	}
	require.NoError(t, publishWithin(t, p, "unread", "sync"))
	s.Wait()

	for i := range 5 {
		tx := recvWithin(t, unread, "unread result")
		assert.Equal(t, []any{i}, tx.Args)
		assert.NoError(t, tx.Error)
	}
}

// A doneChan nobody reads must not hold back the results of another
// caller's publishes either: each caller's results are ordered among
// themselves, not behind a stranger's.
func TestFaultDoneChanNobodyReadsOtherCallers(t *testing.T) {
	s := fakensqd.New(t)
	// A short stop_timeout: the cleanup's Stop waits that long for unread results.
	p := newTestProducer(t, s.Addr(), testConfig(t, "auto_batch", false, "stop_timeout", "100ms"))

	s.Go(func(c *fakensqd.Conn) {
		c.Handshake(nil)
		c.ServePublishes(2)
	})

	unread := make(chan *ProducerTransaction) // caller A never reads, until the end
	require.NoError(t, p.PublishAsync("unread", []byte("a"), unread))
	mine := make(chan *ProducerTransaction, 1) // caller B reads, with room to spare
	require.NoError(t, p.PublishAsync("unread", []byte("b"), mine))

	tx := recvWithin(t, mine, "caller B's result while caller A does not read")
	assert.NoError(t, tx.Error)
	tx = recvWithin(t, unread, "caller A's result")
	assert.NoError(t, tx.Error)
	s.Wait()
}

// connRecorder records what a Conn tells its delegate.
type connRecorder struct {
	responses  chan string
	errors     chan string
	heartbeats chan struct{}
	ioErrors   chan error
	closed     chan struct{}
	closes     atomic.Int32

	// hold, when set, keeps OnResponse (after it has recorded the
	// response) from returning until it is closed: the read goroutine
	// stays busy.
	hold chan struct{}
}

func newConnRecorder() *connRecorder {
	return &connRecorder{
		responses:  make(chan string, 16),
		errors:     make(chan string, 16),
		heartbeats: make(chan struct{}, 16),
		ioErrors:   make(chan error, 16),
		closed:     make(chan struct{}, 16),
	}
}

func (d *connRecorder) OnResponse(c *Conn, data []byte) {
	d.responses <- string(data)
	if d.hold != nil {
		<-d.hold
	}
}
func (d *connRecorder) OnError(c *Conn, data []byte) { d.errors <- string(data) }
func (d *connRecorder) OnIOError(c *Conn, err error) { d.ioErrors <- err }
func (d *connRecorder) OnHeartbeat(c *Conn)          { d.heartbeats <- struct{}{} }
func (d *connRecorder) OnClose(c *Conn) {
	d.closes.Add(1)
	d.closed <- struct{}{}
}

// 17. A Conn used directly, as go-nsq code does.
func TestFaultConnDirect(t *testing.T) {
	s := fakensqd.New(t)
	d := newConnRecorder()
	conn := NewConn(s.Addr(), NewConfig(), d)
	t.Cleanup(func() {
		conn.Close()
		requireNoLeaks(t)
	})
	assert.Nil(t, conn.RemoteAddr(), "no remote address before Connect")

	connected := make(chan error, 1)
	var resp *IdentifyResponse
	go func() {
		var err error
		resp, err = conn.Connect()
		connected <- err
	}()
	c := s.Accept()
	c.Handshake(map[string]any{"max_rdy_count": 42})
	require.NoError(t, recvWithin(t, connected, "Connect"))
	assert.Equal(t, int64(42), resp.MaxRdyCount)
	assert.Equal(t, s.Addr(), conn.RemoteAddr().String())

	// A command reaches nsqd byte for byte as Command.WriteTo encodes it.
	cmd := Publish("direct", []byte("hello"))
	var want bytes.Buffer
	cmd.WriteTo(&want)
	var err error
	within(t, hangGuard, "WriteCommand", func() { err = conn.WriteCommand(cmd) })
	require.NoError(t, err)
	got := c.Expect("PUB")
	assert.Equal(t, want.Bytes(), got.Raw)
	assert.Equal(t, "PUB direct\n\x00\x00\x00\x05hello", string(got.Raw))

	c.OK()
	assert.Equal(t, "OK", recvWithin(t, d.responses, "OnResponse"))

	c.Heartbeat()
	recvWithin(t, d.heartbeats, "OnHeartbeat")
	c.Expect("NOP") // the Conn answers heartbeats by itself

	c.Respond(`{"x":1}`)
	assert.Equal(t, `{"x":1}`, recvWithin(t, d.responses, "OnResponse"))

	c.Error("E_INVALID x")
	assert.Equal(t, "E_INVALID x", recvWithin(t, d.errors, "OnError"))

	_, err = conn.Connect()
	assert.Same(t, ErrAlreadyConnected, err, "Connect on a connected Conn")

	within(t, hangGuard, "Close", func() { require.NoError(t, conn.Close()) })
	recvWithin(t, d.closed, "OnClose")
	c.ExpectClosed(5 * time.Second)
	require.NoError(t, conn.Close(), "Close twice")
	requireNoLeaks(t) // the Conn's goroutines are gone: nothing can call OnClose again
	assert.Equal(t, int32(1), d.closes.Load(), "OnClose is called once")
	assert.Len(t, d.ioErrors, 0, "Close is not an I/O error")
	assert.Len(t, d.responses, 0)
	assert.Len(t, d.errors, 0)

	_, err = conn.Connect()
	assert.Same(t, ErrAlreadyConnected, err, "Connect on a closed Conn")
	err = conn.WriteCommand(Nop())
	assert.True(t, errors.Is(err, ErrClosing) || errors.Is(err, ErrNotConnected), "WriteCommand after Close: %v", err)
}

// Close during the handshake of a Conn used directly: Connect returns at
// once with an error (not after read_timeout), and the socket is closed.
func TestFaultConnCloseDuringConnect(t *testing.T) {
	s := fakensqd.New(t)
	conn := NewConn(s.Addr(), NewConfig(), newConnRecorder())
	t.Cleanup(func() { requireNoLeaks(t) })

	connected := make(chan error, 1)
	go func() {
		_, err := conn.Connect()
		connected <- err
	}()
	c := s.Accept()
	c.ReadMagic()
	c.Expect("IDENTIFY") // never answered

	within(t, hangGuard, "Close", func() { require.NoError(t, conn.Close()) })
	err := recvWithin(t, connected, "Connect, after Close")
	require.Error(t, err)
	c.ExpectClosed(5 * time.Second)

	_, err = conn.Connect()
	assert.Same(t, ErrAlreadyConnected, err)
}

// Close while Connect is still dialing: Connect must return promptly, and
// the socket its dial opens must not stay open.
func TestFaultConnCloseWhileDialing(t *testing.T) {
	s := fakensqd.New(t) // never answers IDENTIFY; its cleanup closes what it accepted
	for i := range 20 {
		conn := NewConn(s.Addr(), NewConfig(), newConnRecorder())
		connected := make(chan error, 1)
		go func() {
			_, err := conn.Connect()
			connected <- err
		}()
		runtime.Gosched() // let Connect start dialing
		require.NoError(t, conn.Close())

		err := recvWithin(t, connected, fmt.Sprintf("iteration %d: Connect, after Close", i))
		require.Error(t, err)
		if nc := conn.conn; nc != nil {
			assert.ErrorIs(t, nc.SetDeadline(time.Time{}), net.ErrClosed,
				"iteration %d: the socket Connect dialed is still open after Close and Connect returned (%v)", i, err)
		}
	}
	requireNoLeaks(t)
}

// An error frame nsqd sent before it reset the connection reaches the
// delegate even when a write fails on the reset first. nsqd answers a bad
// publish that way (the error, then a close with commands unread, hence a
// reset); the error frame is what says which command failed and that those
// behind it were never executed. Here the read goroutine is busy in
// OnResponse while the error frame and the reset arrive and a write fails.
func TestFaultConnErrorFrameBeforeWriteFailure(t *testing.T) {
	const reason = "E_BAD_MESSAGE PUB message too big 2000 > 1024"
	s := fakensqd.New(t)
	d := newConnRecorder()
	d.hold = make(chan struct{})
	conn, c := connectFake(t, s, NewConfig(), d)
	t.Cleanup(func() {
		conn.Close()
		requireNoLeaks(t)
	})

	c.OK()
	assert.Equal(t, "OK", recvWithin(t, d.responses, "OnResponse")) // the read goroutine is now held
	c.Error(reason)
	c.Reset()

	// Write until the reset makes a write fail.
	within(t, hangGuard, "a write failing on the reset", func() {
		for conn.WriteCommand(Nop()) == nil {
		}
	})
	close(d.hold)
	recvWithin(t, d.closed, "OnClose")
	require.Len(t, d.errors, 1, "the error frame that arrived before the reset was lost")
	assert.Equal(t, reason, <-d.errors)
}

// An automatic batch refused because one message is over nsqd's
// --max-msg-size: nsqd names the limit, so only the too big message fails
// and the others go out again.
func TestFaultBatchWithATooBigMessage(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		const reason = "E_BAD_MESSAGE MPUB message too big 2000 > 1024"
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), nil)

		done := make(chan *ProducerTransaction, 3)
		for i, b := range [][]byte{[]byte("m0"), make([]byte, 2000), []byte("m2")} {
			require.NoError(t, p.PublishAsync("big", b, done, i))
		}
		synctest.Wait() // the router has taken them all

		c := s.Accept()
		c.Handshake(nil)
		require.Len(t, c.Expect("MPUB").Messages, 3)
		c.Error(reason)
		c.Close()

		c = s.Accept()
		c.Handshake(nil)
		// m0 and m2 go out again; the too big one is settled in between, not
		// sent, so that results stay in order.
		assert.Equal(t, "m0", bodyOf(c.ExpectPublish()))
		c.OK()
		assert.Equal(t, "m2", bodyOf(c.ExpectPublish()))
		c.OK()

		var txs []*ProducerTransaction
		for range 3 {
			txs = append(txs, recvWithin(t, done, "PublishAsync result"))
		}
		assert.NoError(t, txs[0].Error)
		assert.Equal(t, ErrProtocol{Reason: reason}, txs[1].Error)
		assert.NoError(t, txs[2].Error)

		// The limit lived with the connection that stated it: this one may
		// reach an nsqd with another limit.
		require.NoError(t, p.PublishAsync("big", make([]byte, 1025), done))
		assert.Len(t, c.ExpectPublish().Body, 1025)
		c.OK()
		assert.NoError(t, recvWithin(t, done, "PublishAsync result").Error)
		assert.Equal(t, uint64(2), p.Stats().Connects)
	})
}

// E_MPUB_FAILED: nsqd stores an MPUB's messages one by one and may have
// stored some before failing, so the outcome is unknown, not "refused".
func TestFaultMPUBFailedIsUnknown(t *testing.T) {
	const reason = "E_MPUB_FAILED MPUB failed exiting"
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), nil)
	s.Go(func(c *fakensqd.Conn) {
		c.Handshake(nil)
		c.Expect("MPUB")
		c.Error(reason)
		c.Close()
	})
	err := p.MultiPublish("t", [][]byte{[]byte("a"), []byte("b")})
	require.ErrorIs(t, err, ErrUnknownOutcome)
	var perr ErrProtocol
	require.ErrorAs(t, err, &perr)
	assert.Equal(t, reason, perr.Reason)
	s.Wait()
}
