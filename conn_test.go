package nsq

import (
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// closingDelegate calls Close on its Conn from the callback named in
// closeIn, as go-nsq's own Producer and Consumer do from OnIOError, and
// records every call.
type closingDelegate struct {
	closeIn   string
	calls     chan string   // every callback, in order
	closed    chan struct{} // closed by OnClose
	closes    atomic.Int32
	runningAt atomic.Int32 // the Conn's running goroutines when OnClose was called
	frames    [][]byte     // what OnResponse and OnError got, kept (read goroutine only)
}

func newClosingDelegate(closeIn string) *closingDelegate {
	return &closingDelegate{closeIn: closeIn, calls: make(chan string, 64), closed: make(chan struct{})}
}

func (d *closingDelegate) call(c *Conn, name string) {
	d.calls <- name
	if name == d.closeIn {
		c.Close()
		c.Close()
	}
}

func (d *closingDelegate) OnResponse(c *Conn, data []byte) {
	d.frames = append(d.frames, data)
	d.call(c, "OnResponse")
}
func (d *closingDelegate) OnError(c *Conn, data []byte) {
	d.frames = append(d.frames, data)
	d.call(c, "OnError")
}
func (d *closingDelegate) OnIOError(c *Conn, err error) { d.call(c, "OnIOError") }
func (d *closingDelegate) OnHeartbeat(c *Conn)          { d.call(c, "OnHeartbeat") }
func (d *closingDelegate) OnClose(c *Conn) {
	d.runningAt.Store(c.running.Load())
	d.call(c, "OnClose")
	if d.closes.Add(1) == 1 {
		close(d.closed)
	}
}

// connectFake connects a Conn with delegate d to a fake nsqd and returns
// both ends.
func connectFake(t *testing.T, s *fakensqd.Server, cfg *Config, d ConnDelegate) (*Conn, *fakensqd.Conn) {
	t.Helper()
	conn := NewConn(s.Addr(), cfg, d)
	connected := make(chan error, 1)
	go func() {
		_, err := conn.Connect()
		connected <- err
	}()
	c := s.Accept()
	c.Handshake(nil)
	require.NoError(t, recvWithin(t, connected, "Connect"))
	return conn, c
}

// Issue 8, bug 4: a delegate that calls Close from a callback, OnIOError in
// particular, must not hang the Conn; OnClose runs once, last, when both
// goroutines are done.
func TestConnCloseFromEveryCallback(t *testing.T) {
	for _, tc := range []struct {
		callback string
		trigger  func(c *fakensqd.Conn)
	}{
		{"OnIOError", func(c *fakensqd.Conn) { c.Close() }},
		{"OnResponse", func(c *fakensqd.Conn) { c.OK() }},
		{"OnError", func(c *fakensqd.Conn) { c.Error("E_INVALID x") }},
		{"OnHeartbeat", func(c *fakensqd.Conn) { c.Heartbeat() }},
		{"OnClose", func(c *fakensqd.Conn) { c.Close() }},
	} {
		t.Run(tc.callback, func(t *testing.T) {
			s := fakensqd.New(t)
			d := newClosingDelegate(tc.callback)
			conn, c := connectFake(t, s, NewConfig(), d)
			tc.trigger(c)
			within(t, hangGuard, "OnClose after Close from "+tc.callback, func() { <-d.closed })
			requireNoLeaks(t)
			assert.Equal(t, int32(1), d.closes.Load(), "OnClose once")
			assert.Equal(t, int32(0), d.runningAt.Load(), "OnClose once both goroutines are done")
			close(d.calls)
			var calls []string
			for name := range d.calls {
				calls = append(calls, name)
			}
			require.NotEmpty(t, calls)
			assert.Equal(t, "OnClose", calls[len(calls)-1], "OnClose comes last: %v", calls)
			require.NoError(t, conn.Close(), "Close after OnClose")
		})
	}
}

// Delegates own the slices they are given: changing one in place changes
// nothing else, in this Conn or another (issue 9, point 4).
func TestConnDelegateOwnsFrames(t *testing.T) {
	s := fakensqd.New(t)
	d := newClosingDelegate("")
	conn, c := connectFake(t, s, NewConfig(), d)
	d2 := newClosingDelegate("")
	conn2, c2 := connectFake(t, s, NewConfig(), d2)

	c.OK()
	c.OK()
	c.Error("E_INVALID x")
	for range 3 {
		<-d.calls
	}
	c2.OK()
	<-d2.calls
	require.Len(t, d.frames, 3)
	d.frames[0][0] = 'X' // the delegate edits what it was given
	assert.Equal(t, "XK", string(d.frames[0]))
	assert.Equal(t, "OK", string(d.frames[1]), "each OK is its own slice")
	assert.Equal(t, "OK", string(d2.frames[0]), "another Conn's is untouched")
	assert.Equal(t, "E_INVALID x", string(d.frames[2]))

	// The producer's own delegate only reads: it gets the Conn's one slice.
	p := &Producer{}
	pc := NewConn("127.0.0.1:1", NewConfig(), producerConnDelegate{p})
	assert.Equal(t, "OK", string(pc.okFrame))
	assert.Nil(t, conn.okFrame, "a delegate from outside gets fresh slices")

	conn.Close()
	conn2.Close()
	<-d.closed
	<-d2.closed
	requireNoLeaks(t)
}

// RemoteAddr never panics: before Connect, after Close before Connect,
// after a failed Connect, and after a connection ended (issue 9, point 4).
func TestConnRemoteAddr(t *testing.T) {
	before := NewConn("127.0.0.1:1", NewConfig(), newConnRecorder())
	assert.Nil(t, before.RemoteAddr())
	require.NoError(t, before.Close())
	assert.Nil(t, before.RemoteAddr(), "Close before Connect")
	_, err := before.Connect()
	require.Error(t, err)
	assert.Nil(t, before.RemoteAddr())

	// Nothing listens: dialling fails.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	cfg := NewConfig()
	cfg.DialTimeout = time.Second
	failed := NewConn(addr, cfg, newConnRecorder())
	_, err = failed.Connect()
	require.Error(t, err)
	assert.Nil(t, failed.RemoteAddr(), "failed dial")

	// The handshake fails after the dial: the address is known.
	s := fakensqd.New(t)
	refused := NewConn(s.Addr(), NewConfig(), newConnRecorder())
	done := make(chan error, 1)
	go func() {
		_, err := refused.Connect()
		done <- err
	}()
	c := s.Accept()
	c.ReadMagic()
	c.Expect("IDENTIFY")
	c.Error("E_BAD_BODY no")
	err = recvWithin(t, done, "Connect")
	assert.Equal(t, ErrIdentify{Reason: "E_BAD_BODY no"}, err)
	assert.Equal(t, s.Addr(), refused.RemoteAddr().String(), "after a refused IDENTIFY")

	d := newClosingDelegate("")
	conn, _ := connectFake(t, s, NewConfig(), d)
	require.NoError(t, conn.Close())
	<-d.closed
	assert.Equal(t, s.Addr(), conn.RemoteAddr().String(), "after Close")
	requireNoLeaks(t)
}

// readTimeoutConfig returns a Config for the read_timeout tests; NewConn
// does not validate, so heartbeat intervals nsqd would refuse are allowed.
func readTimeoutConfig(readTimeout, heartbeat time.Duration) *Config {
	cfg := NewConfig()
	cfg.ReadTimeout, cfg.HeartbeatInterval = readTimeout, heartbeat
	return cfg
}

// noIOError fails the test if the Conn reports an I/O error within d:
// waiting is the only way to see that nothing happens.
func noIOError(t *testing.T, d *connRecorder, wait time.Duration, what string) {
	t.Helper()
	select {
	case err := <-d.ioErrors:
		t.Fatalf("%s: the connection ended: %v", what, err)
	case <-time.After(wait):
	}
}

// Issue 9, point 5: with heartbeats off, an idle connection has no read
// deadline, and read_timeout counts from the write of a command, not from
// the last frame received.
func TestConnReadTimeoutCountsFromTheWrite(t *testing.T) {
	const rt = 200 * time.Millisecond
	s := fakensqd.New(t)
	d := newConnRecorder()
	conn, c := connectFake(t, s, readTimeoutConfig(rt, -1), d)
	t.Cleanup(func() { conn.Close() })

	noIOError(t, d, 3*rt, "idle without heartbeats")

	// Answered rt/2 after the write, 3.5 rt after the last frame.
	go func() {
		c.Expect("PUB")
		time.Sleep(rt / 2) // nsqd is slow to answer
		c.OK()
	}()
	require.NoError(t, conn.WriteCommand(Publish("t", []byte("x"))))
	assert.Equal(t, "OK", recvWithin(t, d.responses, "OnResponse"))
	noIOError(t, d, 2*rt, "idle again after the answer")

	// Never answered: the connection ends after read_timeout.
	require.NoError(t, conn.WriteCommand(Publish("t", []byte("y"))))
	c.Expect("PUB")
	err := recvWithin(t, d.ioErrors, "OnIOError")
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.EqualError(t, err, "nsq: nsqd at "+s.Addr()+" did not answer within read_timeout (200ms): read tcp "+
		conn.conn.LocalAddr().String()+"->"+s.Addr()+": i/o timeout")
	recvWithin(t, d.closed, "OnClose")
}

// With heartbeats on, heartbeats keep an idle connection open but do not
// stand in for the answer to a command.
func TestConnHeartbeatsDoNotAnswerACommand(t *testing.T) {
	const rt = 300 * time.Millisecond
	s := fakensqd.New(t)
	d := newConnRecorder()
	conn, c := connectFake(t, s, readTimeoutConfig(rt, 100*time.Millisecond), d)
	t.Cleanup(func() { conn.Close() })

	heartbeat := fakensqd.AppendFrame(nil, FrameTypeResponse, []byte("_heartbeat_"))
	serverDone := make(chan struct{})
	published := make(chan struct{})
	go func() {
		defer close(serverDone)
		for i := 0; ; i++ {
			if i == 8 {
				close(published)
			}
			c.NetConn().Write(heartbeat) // nsqd's ticker
			cmd, err := c.TryReadCommand(time.Second)
			if err != nil {
				return // the client closed the connection
			}
			if cmd.Name == "PUB" {
				cmd, err = c.TryReadCommand(time.Second)
				if err != nil {
					return
				}
			}
			assert.Equal(t, "NOP", cmd.Name)
			time.Sleep(rt / 4)
		}
	}()
	// Eight heartbeats, 2 rt: the idle connection stays open.
	within(t, hangGuard, "eight heartbeats", func() { <-published })
	select {
	case err := <-d.ioErrors:
		t.Fatalf("idle with heartbeats: the connection ended: %v", err)
	default:
	}
	require.NoError(t, conn.WriteCommand(Publish("t", []byte("x"))))
	err := recvWithin(t, d.ioErrors, "OnIOError")
	assert.ErrorContains(t, err, "did not answer within read_timeout (300ms)")
	recvWithin(t, d.closed, "OnClose")
	within(t, hangGuard, "server script", func() { <-serverDone })
	assert.GreaterOrEqual(t, len(d.heartbeats), 8)
}

// With heartbeats on and nothing from nsqd, an idle connection ends after
// read_timeout, saying so.
func TestConnNoHeartbeat(t *testing.T) {
	s := fakensqd.New(t)
	d := newConnRecorder()
	conn, _ := connectFake(t, s, readTimeoutConfig(200*time.Millisecond, 100*time.Millisecond), d)
	t.Cleanup(func() { conn.Close() })
	err := recvWithin(t, d.ioErrors, "OnIOError")
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.ErrorContains(t, err, "nsq: no heartbeat from nsqd at "+s.Addr()+" within read_timeout (200ms)")
	recvWithin(t, d.closed, "OnClose")
}

// An idle producer without heartbeats keeps its connection: it is not torn
// down (and logged as an error) every read_timeout.
func TestIdleProducerWithoutHeartbeatsKeepsItsConnection(t *testing.T) {
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), testConfig(t, "read_timeout", "100ms", "heartbeat_interval", -1))
	s.Go(func(c *fakensqd.Conn) {
		c.Handshake(nil)
		c.Expect("PUB")
		c.OK()
		c.Expect("PUB") // on the same connection
		c.OK()
	})
	require.NoError(t, publishWithin(t, p, "idle", "1"))
	time.Sleep(500 * time.Millisecond) // five read_timeouts of idleness
	require.NoError(t, publishWithin(t, p, "idle", "2"))
	s.Wait()
	st := p.Stats()
	assert.Equal(t, uint64(1), st.Connects)
	assert.Equal(t, uint64(0), st.Reconnects)
}

// read_timeout starts once a command is written: a write that takes longer
// than read_timeout (nsqd slow to read a large body) is watched by
// write_timeout alone, and the answer that follows it in time is taken.
func TestConnReadTimeoutStartsOnceWritten(t *testing.T) {
	const rt = 200 * time.Millisecond
	s := fakensqd.New(t)
	d := newConnRecorder()
	cfg := readTimeoutConfig(rt, 100*time.Millisecond)
	cfg.WriteTimeout = 5 * time.Second
	conn, c := connectFake(t, s, cfg, d)
	t.Cleanup(func() { conn.Close() })

	// Small socket buffers: the write ends when nsqd has read nearly all.
	require.NoError(t, c.NetConn().(*net.TCPConn).SetReadBuffer(64<<10))
	require.NoError(t, conn.conn.(*net.TCPConn).SetWriteBuffer(64<<10))
	body := make([]byte, 8<<20)
	go func() {
		time.Sleep(3 * rt) // nsqd does not read for a while: the write blocks
		cmd := c.Expect("PUB")
		assert.Len(t, cmd.Body, len(body))
		c.OK()
	}()
	require.NoError(t, conn.WriteCommand(Publish("big", body)))
	assert.Equal(t, "OK", recvWithin(t, d.responses, "OnResponse"))
	assert.Len(t, d.ioErrors, 0)
}
