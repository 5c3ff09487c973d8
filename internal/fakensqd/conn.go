package fakensqd

import (
	"compress/flate"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
)

// Conn is one client connection, driven by a test script. Methods that
// check something fail the test as described in the package documentation;
// methods named Try... return an error instead.
//
// A Conn is driven by one goroutine at a time, except that writes (OK,
// Respond, Error, Heartbeat, Frame, WriteRaw) may come from another
// goroutine than reads; each write reaches the socket whole.
type Conn struct {
	s  *Server
	id int      // 1 for the server's first connection; 0 for a dead Conn
	nc net.Conn // nil for a dead Conn

	// How a failure ends the caller: failFatal for a Conn from Accept,
	// failScript for one a Go script got (set before the script runs).
	mode failMode

	readTimeout atomic.Int64           // time.Duration; <= 0: no deadline
	failed      atomic.Bool            // a check failed: every method is a no-op
	closeReason atomic.Pointer[string] // why the fake closed nc; nil while open
	op          atomic.Pointer[string] // the call in progress, for stuck-script reports

	buf []byte // owned by the reading goroutine: bytes read, not yet consumed

	// After UpgradeTLS: the TLS connection over nc, which reads and writes
	// go through (nc is still what Close and Reset close). Written by the
	// reading goroutine under wmu.
	sec *tls.Conn
	// After UpgradeSnappy or UpgradeDeflate: the decompressing reader and
	// the compressing writer over the stream; nil before. r is owned by the
	// reading goroutine, w is guarded by wmu.
	r io.Reader
	w interface {
		io.Writer
		Flush() error
	}

	wmu sync.Mutex // serializes writes
}

func newConn(s *Server, id int, nc net.Conn) *Conn {
	c := &Conn{s: s, id: id, nc: nc}
	c.readTimeout.Store(int64(DefaultReadTimeout))
	return c
}

// deadConn returns the Conn that Accept gives back after a failure on a
// goroutine where the failure does not end the caller: all its methods are
// no-ops.
func deadConn(s *Server) *Conn {
	c := &Conn{s: s}
	c.failed.Store(true)
	return c
}

// NetConn returns the underlying connection, for faults this package has no
// method for (half-closes, socket options). Using it bypasses the Conn's
// checks, and mixing its reads with the Conn's loses bytes the Conn had
// already buffered. It is nil for the Conn a failed Accept returns.
func (c *Conn) NetConn() net.Conn { return c.nc }

// SetReadTimeout sets how long ReadMagic, ReadCommand, Expect, Handshake,
// ExpectPublish and ServePublishes wait for their bytes before failing the
// test; d <= 0 waits until the socket closes. The default is
// [DefaultReadTimeout]. TryReadCommand and ExpectClosed take their own.
func (c *Conn) SetReadTimeout(d time.Duration) { c.readTimeout.Store(int64(d)) }

// ReadMagic reads the 4-byte protocol magic and fails the test unless it is
// exactly [Magic]: two spaces, then "V2".
func (c *Conn) ReadMagic() {
	c.s.t.Helper()
	const op = "ReadMagic"
	if !c.begin(op) {
		return
	}
	defer c.end()
	b, err := c.readN(len(Magic), c.deadline(c.timeout()))
	if err != nil {
		c.fail(op, "%v", err)
		return
	}
	if string(b) != Magic {
		c.fail(op, "got %q, want %q", b, Magic)
	}
}

// TryReadMagic reads the 4-byte protocol magic, waiting up to d (d <= 0:
// until the socket closes). It never fails the test; its error wraps
// [ErrMalformed] when the bytes are not [Magic].
func (c *Conn) TryReadMagic(d time.Duration) error {
	if !c.begin("TryReadMagic") {
		return errors.New("fakensqd: TryReadMagic on a Conn that already failed")
	}
	defer c.end()
	b, err := c.readN(len(Magic), c.deadline(d))
	if err != nil {
		return fmt.Errorf("fakensqd: conn #%d: %w", c.id, err)
	}
	if string(b) != Magic {
		return fmt.Errorf("fakensqd: conn #%d: %w: magic %q, want %q", c.id, ErrMalformed, b, Magic)
	}
	return nil
}

// TryWrite writes b as it is (after UpgradeSnappy, through the snappy
// layer, flushed). It never fails the test: it returns the write's error,
// for example once the client has closed the connection.
func (c *Conn) TryWrite(b []byte) error {
	if !c.begin("TryWrite") {
		return errors.New("fakensqd: TryWrite on a Conn that already failed")
	}
	defer c.end()
	if err := c.writeLocked(b); err != nil {
		return fmt.Errorf("fakensqd: conn #%d: %w", c.id, c.explain(err, "write"))
	}
	return nil
}

// UpgradeTLS performs the server side of a TLS handshake with config, as
// nsqd does after an IDENTIFY answer with "tls_v1": true; from then on the
// Conn reads and writes through TLS. nsqd then sends an OK, encrypted:
// write it (or do something else, to test the client). It never fails the
// test; it gives up after the read timeout.
func (c *Conn) UpgradeTLS(config *tls.Config) error {
	if !c.begin("UpgradeTLS") {
		return errors.New("fakensqd: UpgradeTLS on a Conn that already failed")
	}
	defer c.end()
	if len(c.buf) > 0 {
		return fmt.Errorf("fakensqd: conn #%d: UpgradeTLS: %d bytes read before the upgrade are still unread%s", c.id, len(c.buf), c.partial())
	}
	sec := tls.Server(c.nc, config)
	sec.SetDeadline(c.deadline(c.timeout()))
	if err := sec.Handshake(); err != nil {
		return fmt.Errorf("fakensqd: conn #%d: TLS handshake: %w", c.id, c.explain(err, "TLS handshake"))
	}
	sec.SetDeadline(time.Time{})
	c.wmu.Lock()
	c.sec = sec
	c.wmu.Unlock()
	return nil
}

// UpgradeSnappy switches the connection to snappy framing both ways, as
// nsqd does after an IDENTIFY answer with "snappy": true. nsqd then sends
// an OK, compressed: write it with [Conn.OK] or [Conn.TryWrite] (or do
// something else, to test the client). It never fails the test. Bytes the
// client sent before the switch must all have been read.
func (c *Conn) UpgradeSnappy() error {
	return c.compress("UpgradeSnappy", func(r io.Reader) io.Reader { return snappy.NewReader(r) },
		func(w io.Writer) interface {
			io.Writer
			Flush() error
		} {
			return snappy.NewBufferedWriter(w)
		})
}

// UpgradeDeflate is [Conn.UpgradeSnappy] for deflate, as nsqd does after
// an IDENTIFY answer with "deflate": true, compressing at level.
func (c *Conn) UpgradeDeflate(level int) error {
	return c.compress("UpgradeDeflate", func(r io.Reader) io.Reader { return flate.NewReader(r) },
		func(w io.Writer) interface {
			io.Writer
			Flush() error
		} {
			fw, err := flate.NewWriter(w, level)
			if err != nil {
				fw, _ = flate.NewWriter(w, flate.DefaultCompression)
			}
			return fw
		})
}

func (c *Conn) compress(op string, reader func(io.Reader) io.Reader, writer func(io.Writer) interface {
	io.Writer
	Flush() error
}) error {
	if !c.begin(op) {
		return errors.New("fakensqd: " + op + " on a Conn that already failed")
	}
	defer c.end()
	if len(c.buf) > 0 {
		return fmt.Errorf("fakensqd: conn #%d: %s: %d bytes read before the upgrade are still unread%s", c.id, op, len(c.buf), c.partial())
	}
	c.r = reader(c.stream())
	c.wmu.Lock()
	c.w = writer(c.stream())
	c.wmu.Unlock()
	return nil
}

// PeerClosed returns a channel closed once the client has closed (or
// reset) its end of an in-memory connection ([NewMem]), so that a script
// that stops reading still learns when the client gives up. It is nil, and
// never ready, for a TCP connection.
func (c *Conn) PeerClosed() <-chan struct{} {
	if m, ok := c.nc.(*memConn); ok {
		return m.link.gone[m.peer()]
	}
	return nil
}

// ReadCommand reads one command, with its body for the commands that carry
// one, and fails the test if none arrives within the read timeout, the
// client closes the connection or the bytes are malformed.
func (c *Conn) ReadCommand() Command {
	c.s.t.Helper()
	const op = "ReadCommand"
	if !c.begin(op) {
		return Command{}
	}
	defer c.end()
	cmd, err := c.readCommand(c.timeout())
	if err != nil {
		c.fail(op, "%v", err)
		return Command{}
	}
	return cmd
}

// TryReadCommand reads one command, waiting up to d (d <= 0: until the
// socket closes). It never fails the test. Its error wraps
// [os.ErrDeadlineExceeded] if no complete command arrived in time (the
// bytes of a partial one stay buffered for the next read), [io.EOF] if the
// client closed the connection, [net.ErrClosed] if the fake did, and
// [ErrMalformed] for bytes that cannot be a command.
func (c *Conn) TryReadCommand(d time.Duration) (Command, error) {
	if !c.begin("TryReadCommand") {
		return Command{}, errors.New("fakensqd: TryReadCommand on a Conn that already failed")
	}
	defer c.end()
	cmd, err := c.readCommand(d)
	if err != nil {
		return Command{}, fmt.Errorf("fakensqd: conn #%d: %w", c.id, err)
	}
	return cmd, nil
}

// Expect reads one command like [Conn.ReadCommand] and fails the test
// unless it is named name.
func (c *Conn) Expect(name string) Command {
	c.s.t.Helper()
	op := "Expect(" + strconv.Quote(name) + ")"
	if !c.begin(op) {
		return Command{}
	}
	defer c.end()
	cmd, err := c.readCommand(c.timeout())
	if err != nil {
		c.fail(op, "%v", err)
		return Command{}
	}
	if cmd.Name != name {
		c.fail(op, "got %s", cmd)
		return Command{}
	}
	return cmd
}

// ExpectPublish reads commands, skipping NOPs, until a PUB, MPUB or DPUB
// and returns it without answering. It fails the test on any other command.
func (c *Conn) ExpectPublish() Command {
	c.s.t.Helper()
	return c.expectPublish("ExpectPublish")
}

// ServePublishes plays a healthy nsqd for n publishes: it reads PUB, MPUB
// and DPUB commands, answering OK to each, skips NOPs without answering, and
// returns the n publishes in order. It fails the test on any other command.
func (c *Conn) ServePublishes(n int) []Command {
	c.s.t.Helper()
	cmds := make([]Command, 0, n)
	for i := range n {
		cmd := c.expectPublish(fmt.Sprintf("ServePublishes(%d): publish %d", n, i+1))
		if c.failed.Load() {
			return cmds
		}
		cmds = append(cmds, cmd)
		c.OK()
	}
	return cmds
}

func (c *Conn) expectPublish(op string) Command {
	c.s.t.Helper()
	if !c.begin(op) {
		return Command{}
	}
	defer c.end()
	for {
		cmd, err := c.readCommand(c.timeout())
		if err != nil {
			c.fail(op, "%v", err)
			return Command{}
		}
		switch cmd.Name {
		case "NOP":
			continue
		case "PUB", "MPUB", "DPUB":
			return cmd
		}
		c.fail(op, "got %s, want PUB, MPUB, DPUB or NOP", cmd)
		return Command{}
	}
}

// Handshake plays nsqd's side of a connection's start: it reads the magic
// and an IDENTIFY, and answers like nsqd v1.3.0. When the IDENTIFY JSON has
// "feature_negotiation": true the answer is a response frame holding the
// JSON of [DefaultIdentifyResponse] with resp's keys added or overriding
// (a nil value removes the key); otherwise it is "OK", as nsqd does. No
// upgrade is performed: if resp says tls_v1, snappy or deflate, the
// connection still continues in plain text, which is a fault to test. It
// fails the test if the IDENTIFY body is not a JSON object, and returns the
// IDENTIFY command.
func (c *Conn) Handshake(resp map[string]any) Command {
	c.s.t.Helper()
	c.ReadMagic()
	cmd := c.Expect("IDENTIFY")
	if c.failed.Load() {
		return Command{}
	}
	var req map[string]any
	if err := json.Unmarshal(cmd.Body, &req); err != nil {
		c.fail("Handshake", "IDENTIFY body is not a JSON object: %v: %s", err, preview(cmd.Body))
		return Command{}
	}
	if req["feature_negotiation"] != true {
		c.OK()
		return cmd
	}
	m := DefaultIdentifyResponse()
	for k, v := range resp {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	js, err := json.Marshal(m)
	if err != nil {
		c.fail("Handshake", "cannot encode the IDENTIFY response: %v", err)
		return Command{}
	}
	c.Frame(FrameTypeResponse, js)
	return cmd
}

// OK writes the response frame "OK".
func (c *Conn) OK() {
	c.s.t.Helper()
	c.writeFrame("OK()", FrameTypeResponse, ResponseOK)
}

// Respond writes a response frame (type 0) holding data.
func (c *Conn) Respond(data string) {
	c.s.t.Helper()
	c.writeFrame("Respond("+strconv.Quote(data)+")", FrameTypeResponse, data)
}

// Error writes an error frame (type 1) holding data, for example
// "E_BAD_TOPIC PUB topic name \"a b\" is not valid". Like nsqd after a
// failed publish, follow it with [Conn.Close] to end the connection.
func (c *Conn) Error(data string) {
	c.s.t.Helper()
	c.writeFrame("Error("+strconv.Quote(data)+")", FrameTypeError, data)
}

// Heartbeat writes the response frame "_heartbeat_".
func (c *Conn) Heartbeat() {
	c.s.t.Helper()
	c.writeFrame("Heartbeat()", FrameTypeResponse, ResponseHeartbeat)
}

// Frame writes a frame of any type, [FrameTypeMessage] or an undefined one
// included.
func (c *Conn) Frame(typ int32, data []byte) {
	c.s.t.Helper()
	c.write(fmt.Sprintf("Frame(%d, %d bytes)", typ, len(data)), AppendFrame(nil, typ, data))
}

// WriteRaw writes b as is: half frames, garbage, a frame size of 1<<31.
// [AppendFrame] builds the frames to cut.
func (c *Conn) WriteRaw(b []byte) {
	c.s.t.Helper()
	c.write(fmt.Sprintf("WriteRaw(%d bytes)", len(b)), b)
}

// Close closes the connection; the client reads EOF. Closing twice, or a
// connection the client closed, is not a failure.
func (c *Conn) Close() {
	if c.failed.Load() {
		return
	}
	c.closeWith("the script closed it with Close")
}

// Reset closes the connection with SO_LINGER 0, so that the kernel sends a
// TCP RST: the client's next read or write fails with a connection reset
// error (ECONNRESET) and unread data is discarded.
func (c *Conn) Reset() {
	c.s.t.Helper()
	if c.failed.Load() {
		return
	}
	reason := "the script reset it with Reset"
	if !c.closeReason.CompareAndSwap(nil, &reason) {
		return
	}
	if r, ok := c.nc.(resetter); ok {
		r.Reset()
		return
	}
	if tc, ok := c.nc.(*net.TCPConn); ok {
		if err := tc.SetLinger(0); err != nil {
			c.nc.Close()
			c.fail("Reset", "SetLinger(0): %v", err)
			return
		}
	}
	c.nc.Close()
}

// ExpectClosed waits up to timeout for the client to close its side of the
// connection (a read returns EOF or an error such as a reset). It fails the
// test if a command, or part of one, arrives first, even a NOP; if the
// client keeps the connection open; or if the fake closed it itself.
func (c *Conn) ExpectClosed(timeout time.Duration) {
	c.s.t.Helper()
	op := fmt.Sprintf("ExpectClosed(%v)", timeout)
	if !c.begin(op) {
		return
	}
	defer c.end()
	deadline := c.deadline(timeout)
	for {
		if len(c.buf) > 0 {
			cmd, n, err := parseCommand(c.buf)
			if err != nil {
				c.fail(op, "the client sent bytes that are not a command instead of closing: %v", err)
				return
			}
			if n > 0 {
				c.fail(op, "the client sent %s instead of closing", cmd)
				return
			}
		}
		err := c.fill(deadline)
		if err == nil {
			continue
		}
		switch {
		case c.closeReason.Load() != nil:
			c.fail(op, "the fake closed the connection itself: %s", *c.closeReason.Load())
		case errors.Is(err, os.ErrDeadlineExceeded):
			c.fail(op, "the client did not close the connection within %v%s", timeout, c.partial())
		case len(c.buf) > 0:
			if cmd, n, _ := parseCommand(c.buf); n > 0 {
				c.fail(op, "the client sent %s instead of closing", cmd)
			} else {
				c.fail(op, "the client closed the connection after part of a command%s", c.partial())
			}
		}
		return // EOF or another error (a reset): closed
	}
}

// begin starts a call named op. It returns false, doing nothing, when the
// Conn already failed.
func (c *Conn) begin(op string) bool {
	if c.failed.Load() {
		return false
	}
	c.s.beginOp()
	c.op.Store(&op)
	return true
}

func (c *Conn) end() {
	c.op.Store(nil)
	c.s.endOp()
}

// fail makes the Conn dead, closes its socket so that the client does not
// wait for answers, and reports the failure (see Server.fail).
func (c *Conn) fail(op, format string, args ...any) {
	c.s.t.Helper()
	c.failed.Store(true)
	c.closeWith("the script failed")
	c.s.fail(c.mode, fmt.Sprintf("fakensqd: conn #%d: %s: %s", c.id, op, fmt.Sprintf(format, args...)))
}

// closeWith closes the socket unless it is closed already, remembering why
// for later error messages.
func (c *Conn) closeWith(reason string) {
	if c.nc != nil && c.closeReason.CompareAndSwap(nil, &reason) {
		c.nc.Close()
	}
}

func (c *Conn) timeout() time.Duration { return time.Duration(c.readTimeout.Load()) }

// deadline turns a timeout into a read deadline; the zero time means none.
func (c *Conn) deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

func (c *Conn) writeFrame(op string, typ int32, data string) {
	c.s.t.Helper()
	c.write(op, AppendFrame(nil, typ, []byte(data)))
}

func (c *Conn) write(op string, b []byte) {
	c.s.t.Helper()
	if !c.begin(op) {
		return
	}
	defer c.end()
	if err := c.writeLocked(b); err != nil {
		c.fail(op, "%v", c.explain(err, "write"))
	}
}

// stream returns what reads and writes go through: the TLS connection
// after UpgradeTLS, nc before. Called by the reading goroutine, or under
// wmu.
func (c *Conn) stream() net.Conn {
	if c.sec != nil {
		return c.sec
	}
	return c.nc
}

// writeLocked writes b whole, through the TLS and compression layers once
// they are set up.
func (c *Conn) writeLocked(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.stream().SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	if c.w == nil {
		_, err := c.stream().Write(b)
		return err
	}
	if _, err := c.w.Write(b); err != nil {
		return err
	}
	return c.w.Flush()
}

// readCommand reads the next command, waiting up to d (d <= 0: forever).
func (c *Conn) readCommand(d time.Duration) (Command, error) {
	deadline := c.deadline(d)
	var rerr error
	for {
		cmd, n, err := parseCommand(c.buf)
		if err != nil {
			return Command{}, err
		}
		if n > 0 {
			c.consume(n)
			return cmd, nil
		}
		if rerr != nil {
			if errors.Is(rerr, os.ErrDeadlineExceeded) {
				return Command{}, fmt.Errorf("no complete command within %v%s: %w", d, c.partial(), os.ErrDeadlineExceeded)
			}
			return Command{}, c.explain(rerr, "read")
		}
		rerr = c.fill(deadline)
	}
}

// readN reads exactly n bytes.
func (c *Conn) readN(n int, deadline time.Time) ([]byte, error) {
	for len(c.buf) < n {
		if err := c.fill(deadline); err != nil && len(c.buf) < n {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, fmt.Errorf("no %d bytes within the read timeout%s: %w", n, c.partial(), os.ErrDeadlineExceeded)
			}
			return nil, c.explain(err, "read")
		}
	}
	b := slices.Clone(c.buf[:n])
	c.consume(n)
	return b, nil
}

// fill reads once from the socket into c.buf.
func (c *Conn) fill(deadline time.Time) error {
	if err := c.stream().SetReadDeadline(deadline); err != nil {
		return err
	}
	c.buf = slices.Grow(c.buf, max(4096, len(c.buf)))
	var r io.Reader = c.stream()
	if c.r != nil {
		r = c.r
	}
	n, err := r.Read(c.buf[len(c.buf):cap(c.buf)])
	c.buf = c.buf[:len(c.buf)+n]
	return err
}

func (c *Conn) consume(n int) { c.buf = c.buf[:copy(c.buf, c.buf[n:])] }

// partial describes the buffered bytes of an incomplete command.
func (c *Conn) partial() string {
	if len(c.buf) == 0 {
		return ""
	}
	return fmt.Sprintf(" (got %d bytes of one: %s)", len(c.buf), preview(c.buf))
}

// explain turns a socket error into one that says who closed what.
func (c *Conn) explain(err error, what string) error {
	if reason := c.closeReason.Load(); reason != nil {
		return fmt.Errorf("%s: the fake had closed the connection: %s: %w", what, *reason, net.ErrClosed)
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: the client closed the connection%s: %w", what, c.partial(), io.EOF)
	}
	return fmt.Errorf("%s: %w", what, err)
}
