package nsq

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
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
	pc := NewConn("127.0.0.1:1", NewConfig(), producerConnDelegate{&router{}})
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

// pipeNsqd is a scripted nsqd at the other end of a net.Pipe, for Conn
// tests on virtual time (testing/synctest): it answers the handshake, then
// reads commands onto cmds until the pipe closes.
type pipeNsqd struct {
	nc   net.Conn
	cmds chan string // each command's line
}

// connectPipe connects a Conn with delegate d to a pipeNsqd. It must run in
// a synctest bubble.
func connectPipe(t *testing.T, cfg *Config, d ConnDelegate) (*Conn, *pipeNsqd) {
	t.Helper()
	client, server := net.Pipe()
	s := &pipeNsqd{nc: server, cmds: make(chan string, 64)}
	conn := NewConn("nsqd.test:4150", cfg, d)
	conn.dial = func(context.Context, string) (net.Conn, error) { return client, nil }
	go s.serve(nil)
	_, err := conn.Connect()
	require.NoError(t, err)
	require.Equal(t, "IDENTIFY", <-s.cmds)
	return conn, s
}

// serve reads the magic and then commands, answering IDENTIFY. With a
// gate, it stops reading after IDENTIFY until the gate is closed.
func (s *pipeNsqd) serve(gate <-chan struct{}) {
	defer close(s.cmds)
	br := bufio.NewReader(s.nc)
	if _, err := io.ReadFull(br, make([]byte, 4)); err != nil { // the magic
		return
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		name, _, _ := strings.Cut(line, " ")
		if name != "NOP" {
			var size [4]byte
			if _, err := io.ReadFull(br, size[:]); err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, br, int64(binary.BigEndian.Uint32(size[:]))); err != nil {
				return
			}
		}
		if name == "IDENTIFY" {
			s.frame(FrameTypeResponse, `{"max_rdy_count":2500}`)
			s.cmds <- line
			if gate != nil {
				<-gate
			}
			continue
		}
		s.cmds <- line
	}
}

// frame writes a frame to the Conn.
func (s *pipeNsqd) frame(typ int32, data string) {
	s.nc.Write(fakensqd.AppendFrame(nil, typ, []byte(data)))
}

// quiet reports whether the Conn reported no I/O error so far.
func quiet(d *connRecorder) bool { return len(d.ioErrors) == 0 }

// Issue 9, point 5, on virtual time: with heartbeats off, an idle
// connection has no read deadline, and read_timeout counts from the write
// of a command, not from the last frame received; it ends the connection
// exactly read_timeout after an unanswered write.
func TestConnReadTimeoutCountsFromTheWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rt = 200 * time.Millisecond
		d := newConnRecorder()
		conn, s := connectPipe(t, readTimeoutConfig(rt, -1), d)

		time.Sleep(100 * rt) // idle without heartbeats
		synctest.Wait()
		assert.True(t, quiet(d), "idle without heartbeats")

		// Answered just before rt after the write, long after the last frame.
		require.NoError(t, conn.WriteCommand(Publish("t", []byte("x"))))
		assert.Equal(t, "PUB t", <-s.cmds)
		time.Sleep(rt - time.Millisecond)
		s.frame(FrameTypeResponse, "OK")
		assert.Equal(t, "OK", <-d.responses)
		time.Sleep(100 * rt)
		synctest.Wait()
		assert.True(t, quiet(d), "idle again after the answer")

		// Never answered: the connection ends read_timeout after the write.
		require.NoError(t, conn.WriteCommand(Publish("t", []byte("y"))))
		assert.Equal(t, "PUB t", <-s.cmds)
		time.Sleep(rt - time.Nanosecond)
		synctest.Wait()
		assert.True(t, quiet(d), "just before read_timeout")
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		require.Len(t, d.ioErrors, 1)
		err := <-d.ioErrors
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		assert.ErrorContains(t, err, "nsq: nsqd at nsqd.test:4150 did not answer within read_timeout (200ms)")
		<-d.closed
	})
}

// Each answer restarts read_timeout for the next unanswered command.
func TestConnReadTimeoutRestartsAtEachAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rt = 200 * time.Millisecond
		d := newConnRecorder()
		conn, s := connectPipe(t, readTimeoutConfig(rt, -1), d)
		for range 3 {
			require.NoError(t, conn.WriteCommand(Publish("t", []byte("x"))))
			<-s.cmds
		}
		for range 3 {
			time.Sleep(rt - time.Millisecond) // 3 rt in all: each answer in time
			s.frame(FrameTypeResponse, "OK")
			<-d.responses
		}
		time.Sleep(100 * rt)
		synctest.Wait()
		assert.True(t, quiet(d))
		conn.Close()
		<-d.closed
	})
}

// With heartbeats on, heartbeats keep an idle connection open but do not
// stand in for the answer to a command.
func TestConnHeartbeatsDoNotAnswerACommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rt = 300 * time.Millisecond
		d := newConnRecorder()
		conn, s := connectPipe(t, readTimeoutConfig(rt, 100*time.Millisecond), d)
		heartbeat := func() {
			s.frame(FrameTypeResponse, "_heartbeat_")
			<-d.heartbeats
			assert.Equal(t, "NOP", <-s.cmds, "the Conn answers a heartbeat")
		}
		for range 20 { // idle, 20 heartbeats rt/2 apart: 10 rt
			time.Sleep(rt / 2)
			heartbeat()
		}
		assert.True(t, quiet(d), "idle with heartbeats")

		require.NoError(t, conn.WriteCommand(Publish("t", []byte("x"))))
		assert.Equal(t, "PUB t", <-s.cmds)
		time.Sleep(rt / 2)
		heartbeat()
		time.Sleep(rt/2 - time.Nanosecond)
		synctest.Wait()
		assert.True(t, quiet(d), "just before read_timeout")
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		require.Len(t, d.ioErrors, 1, "read_timeout after the write, heartbeat or not")
		assert.ErrorContains(t, <-d.ioErrors, "did not answer within read_timeout (300ms)")
		<-d.closed
	})
}

// With heartbeats on and nothing from nsqd, an idle connection ends
// read_timeout after the last frame, saying so.
func TestConnNoHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rt = 200 * time.Millisecond
		d := newConnRecorder()
		_, s := connectPipe(t, readTimeoutConfig(rt, 100*time.Millisecond), d)
		time.Sleep(rt / 2)
		s.frame(FrameTypeResponse, "_heartbeat_")
		<-d.heartbeats
		<-s.cmds // NOP
		time.Sleep(rt - time.Nanosecond)
		synctest.Wait()
		assert.True(t, quiet(d))
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		require.Len(t, d.ioErrors, 1)
		err := <-d.ioErrors
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		assert.ErrorContains(t, err, "nsq: no heartbeat from nsqd at nsqd.test:4150 within read_timeout (200ms)")
		<-d.closed
	})
}

// read_timeout starts once a command is written: a write that takes longer
// than read_timeout (nsqd slow to read a large body) is watched by
// write_timeout alone, and an answer within read_timeout of the end of the
// write is taken.
func TestConnReadTimeoutStartsOnceWritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rt = 200 * time.Millisecond
		d := newConnRecorder()
		cfg := readTimeoutConfig(rt, 100*time.Millisecond)
		cfg.WriteTimeout = 10 * rt
		client, server := net.Pipe()
		conn := NewConn("nsqd.test:4150", cfg, d)
		conn.dial = func(context.Context, string) (net.Conn, error) { return client, nil }
		s := &pipeNsqd{nc: server, cmds: make(chan string, 64)}
		// nsqd reads the handshake at once, then stops reading for 5 rt:
		// net.Pipe holds no bytes, so the write blocks meanwhile.
		slow := make(chan struct{})
		go s.serve(slow)
		_, err := conn.Connect()
		require.NoError(t, err)
		require.Equal(t, "IDENTIFY", <-s.cmds)
		written := make(chan error, 1)
		go func() { written <- conn.WriteCommand(Publish("big", make([]byte, 1<<20))) }()
		time.Sleep(5 * rt)
		synctest.Wait()
		assert.True(t, quiet(d), "no read deadline while the command is being written")
		close(slow)
		require.NoError(t, <-written)
		assert.Equal(t, "PUB big", <-s.cmds)
		time.Sleep(rt - time.Millisecond)
		s.frame(FrameTypeResponse, "OK")
		assert.Equal(t, "OK", <-d.responses)
		assert.True(t, quiet(d))
		conn.Close()
		<-d.closed
	})
}

// An idle producer without heartbeats keeps its connection: it is not torn
// down (and logged as an error) every read_timeout.
func TestIdleProducerWithoutHeartbeatsKeepsItsConnection(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
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
	})
}

// gatherBatch returns publishes of every kind, with bodies on both sides of
// gatherMin and larger than the write buffer, prepared by a router into
// one batch for the write goroutine (runs of PUBs become MPUBs), and the
// bodies nsqd must store, sorted.
func gatherBatch(t *testing.T, topic string) ([]*ProducerTransaction, []string) {
	t.Helper()
	body := func(i, size int) []byte {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, size)
		copy(b, fmt.Sprintf("%d-", i))
		return b
	}
	var txs []*ProducerTransaction
	var want []string
	i := 0
	add := func(tx *ProducerTransaction, bodies ...[]byte) {
		tx.topic = topic
		txs = append(txs, tx)
		for _, b := range bodies {
			want = append(want, string(b))
		}
	}
	// PUBs: small, at gatherMin, larger than the buffer; three of 600 KB
	// carry the batch past a MiB (the gathered bodies are flushed there).
	for _, size := range []int{100, gatherMin - 1, gatherMin, 5000, 70 << 10, 600 << 10, 600 << 10, 600 << 10, 30} {
		b := body(i, size)
		i++
		add(&ProducerTransaction{kind: kindPUB, body: b, size: int64(size)}, b)
	}
	b := body(i, 3000)
	i++
	add(&ProducerTransaction{kind: kindDPUB, body: b, size: 3000}, b)
	var sync, async [][]byte
	for _, size := range []int{1500, 10, 80 << 10, gatherMin} {
		sync = append(sync, body(i, size))
		async = append(async, body(i+1, size))
		i += 2
	}
	add(&ProducerTransaction{kind: kindMPUB, bodies: sync, size: mpubBodySize(sync)}, sync...)
	add(&ProducerTransaction{kind: kindMPUB, body: encodeMPUBBody(async, mpubBodySize(async)), size: mpubBodySize(async)}, async...)

	p, err := NewProducer("127.0.0.1:1", NewConfig())
	require.NoError(t, err)
	r := newRouter(p)
	r.connected = true
	for _, tx := range txs {
		r.queue.pushBack(tx)
	}
	r.prepare()
	require.Len(t, r.prep, len(txs))
	slices.Sort(want)
	return r.prep, want
}

// On a plain connection the write goroutine gathers large bodies into one
// writev; over TLS or compression it copies them. Either way nsqd stores
// every message of a batch of every kind of publish, byte for byte, and
// the buffer keeps no body once the batch is written.
func TestConnGatheredBatchReachesNsqdByteExact(t *testing.T) {
	ca, cert, key := nsqdtest.GenCerts(t)
	n := nsqdtest.Start(t, "--tls-cert="+cert, "--tls-key="+key, "--snappy=true", "--deflate=true")
	for _, tc := range []struct {
		name   string
		kv     []any
		gather bool
	}{
		{"plain", nil, true},
		{"snappy", []any{"snappy", true}, false},
		{"deflate", []any{"deflate", true}, false},
		{"tls", []any{"tls_v1", true, "tls_root_ca_file", ca}, false},
		{"tls_snappy", []any{"tls_v1", true, "tls_root_ca_file", ca, "snappy", true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "gather_" + tc.name
			d := newConnRecorder()
			conn := NewConn(n.TCPAddr(), testConfig(t, tc.kv...), d)
			_, err := conn.Connect()
			require.NoError(t, err)
			defer conn.Close()
			assert.Equal(t, tc.gather, conn.wb.gather, "gathers")

			txs, want := gatherBatch(t, topic)
			done := make(chan error, 1)
			conn.writeChan <- writeRequest{txs: txs, done: done}
			require.NoError(t, recvWithin(t, done, "the write"))
			assert.Empty(t, conn.wb.segs)
			for _, s := range conn.wb.segs[:cap(conn.wb.segs)] {
				require.Nil(t, s, "a body kept after its batch was written")
			}
			for range commandCount(txs) {
				assert.Equal(t, "OK", recvWithin(t, d.responses, "nsqd's answer"))
			}
			msgs := n.Consume(t, topic, len(want), consumeTimeout)
			got := bodyStrings(msgs)
			slices.Sort(got)
			require.Equal(t, len(want), len(got))
			for i := range want {
				require.True(t, want[i] == got[i], "message %d differs (%d bytes, want %d)", i, len(got[i]), len(want[i]))
			}
		})
	}
}

// A gathered write that nsqd stops taking half way fails at write_timeout,
// as a copied one does: the batch's report is the deadline's error, the
// connection ends with it, and what nsqd did read is the batch's first
// bytes, in order.
func TestConnGatheredWriteTimesOut(t *testing.T) {
	s := fakensqd.New(t)
	d := newConnRecorder()
	cfg := testConfig(t, "write_timeout", "300ms")
	conn, c := connectFake(t, s, cfg, d)
	require.True(t, conn.wb.gather)
	nc := c.NetConn()
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetReadBuffer(64 << 10) // no autotuning: the client blocks sooner
	}

	// 24 MiB of bodies: more than the socket buffers hold.
	var txs []*ProducerTransaction
	for i := range 48 {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, 512<<10)
		txs = append(txs, &ProducerTransaction{kind: kindPUB, topic: "stall", body: b, size: int64(len(b)), n: 1})
	}
	var wire bytes.Buffer
	enc := newWireBuf(&wire, 64<<10)
	for _, tx := range txs {
		require.NoError(t, writePUB(enc, tx.topic, tx.body))
	}
	require.NoError(t, enc.flush())

	// nsqd reads 3 MiB, then nothing.
	read := make([]byte, 3<<20)
	nc.SetReadDeadline(time.Now().Add(hangGuard))
	readErr := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(nc, read)
		readErr <- err
	}()
	done := make(chan error, 1)
	start := time.Now()
	conn.writeChan <- writeRequest{txs: txs, done: done}
	err := recvWithin(t, done, "the write's report")
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.ErrorContains(t, err, "did not take our bytes within write_timeout (300ms)")
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	require.NoError(t, recvWithin(t, readErr, "nsqd's read"))
	assert.True(t, bytes.Equal(wire.Bytes()[:len(read)], read), "nsqd read other bytes than the batch's first ones")
	assert.ErrorIs(t, recvWithin(t, d.ioErrors, "OnIOError"), os.ErrDeadlineExceeded)
	assert.Equal(t, stateClosed, conn.state.Load())
}
