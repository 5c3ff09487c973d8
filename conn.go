package nsq

import (
	"bufio"
	"compress/flate"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
)

// ConnDelegate receives what a [Conn] reads from nsqd. Its methods are called
// from the connection's read goroutine (OnIOError and OnClose may also be
// called from its write goroutine or from Close); data is valid only during
// the call.
//
// It is the part of go-nsq's ConnDelegate a producer needs: a type written
// for go-nsq's (larger) interface satisfies it.
type ConnDelegate interface {
	// OnResponse is called for each response frame but heartbeats.
	OnResponse(*Conn, []byte)
	// OnError is called for each error frame.
	OnError(*Conn, []byte)
	// OnIOError is called once, with the error that broke the connection.
	OnIOError(*Conn, error)
	// OnHeartbeat is called for each heartbeat; the Conn answers it with NOP.
	OnHeartbeat(*Conn)
	// OnClose is called once, after the connection's goroutines have exited.
	OnClose(*Conn)
}

// IdentifyResponse is what nsqd answers to IDENTIFY with feature negotiation.
type IdentifyResponse struct {
	MaxRdyCount  int64 `json:"max_rdy_count"`
	TLSv1        bool  `json:"tls_v1"`
	Deflate      bool  `json:"deflate"`
	Snappy       bool  `json:"snappy"`
	AuthRequired bool  `json:"auth_required"`
}

// AuthResponse is what nsqd answers to AUTH.
type AuthResponse struct {
	Identity        string `json:"identity"`
	IdentityUrl     string `json:"identity_url"`
	PermissionCount int64  `json:"permission_count"`
}

// Conn is one connection to nsqd: the handshake (magic, IDENTIFY, TLS,
// snappy or deflate, AUTH), then a read goroutine that decodes frames for
// the delegate and answers heartbeats, and a write goroutine that owns the
// socket's write side. A [Producer] owns one Conn at a time; code that talks
// to nsqd directly can use it through [NewConn].
type Conn struct {
	addr     string
	config   *Config
	delegate ConnDelegate
	logf     func(lvl LogLevel, format string, args ...any) // never nil

	// Written by connect under connMu (teardown may read it meanwhile), then
	// read-only.
	connMu sync.Mutex
	conn   net.Conn // the TCP connection, or the TLS one over it

	// Owned by connect, then by the read goroutine.
	fr frameReader
	// Owned by connect, then by the write goroutine.
	bw       *bufio.Writer
	flushers []interface{ Flush() error } // compressor layers under bw, flushed after it

	state     atomic.Int32      // connState
	writeChan chan writeRequest // to the write goroutine; unbuffered: a send succeeds when it is idle
	nopChan   chan struct{}     // a NOP is due; capacity 1
	exitChan  chan struct{}     // closed by teardown
	closeOnce sync.Once
	err       error                 // why the connection ended: written before exitChan is closed
	running   atomic.Int32          // goroutines still running; the last one out calls OnClose
	writeErr  atomic.Pointer[error] // set when the write goroutine failed; the reader drains and ends
	drainBy   atomic.Int64          // when the reader must have drained (Unix ns), once writeErr is set
}

type connState = int32

const (
	stateInit connState = iota
	stateConnecting
	stateConnected
	stateClosed
)

// writeRequest is one unit of work for the write goroutine: a batch of
// producer transactions, or one command. The result of writing and
// flushing it is sent on done, when there is one, which has room for it;
// the Pings in a batch are completed by the write goroutine.
type writeRequest struct {
	txs  []*ProducerTransaction // publishes, encoded in order
	nops []*ProducerTransaction // Pings: a NOP each, completed once written
	cmd  *Command
	done chan error
}

// NewConn returns a Conn to nsqd at addr; nothing happens until Connect.
// config must come from NewConfig.
func NewConn(addr string, config *Config, delegate ConnDelegate) *Conn {
	config.assertInitialized()
	return &Conn{
		addr:      addr,
		config:    config,
		delegate:  delegate,
		logf:      func(LogLevel, string, ...any) {},
		writeChan: make(chan writeRequest),
		nopChan:   make(chan struct{}, 1),
		exitChan:  make(chan struct{}),
	}
}

// String returns the nsqd address given to NewConn.
func (c *Conn) String() string { return c.addr }

// RemoteAddr returns the address of the connected nsqd, or nil before
// Connect.
func (c *Conn) RemoteAddr() net.Addr {
	if c.state.Load() < stateConnected {
		return nil
	}
	return c.conn.RemoteAddr()
}

// Connect dials nsqd, performs the handshake and starts the connection's
// read and write goroutines. It returns nsqd's answer to IDENTIFY.
func (c *Conn) Connect() (*IdentifyResponse, error) {
	return c.connect(context.Background())
}

// Close tears the connection down at once: the socket is closed, the
// goroutines exit and the delegate's OnClose is called. It is safe to call
// more than once and always returns nil.
func (c *Conn) Close() error {
	c.teardown(ErrClosing)
	return nil
}

// WriteCommand writes cmd to nsqd and flushes it, through the write
// goroutine, and returns the error of doing so.
func (c *Conn) WriteCommand(cmd *Command) error {
	return c.write(writeRequest{cmd: cmd, done: make(chan error, 1)})
}

// Flush waits until everything written before it has been flushed to the
// socket. (WriteCommand flushes already; Flush is there for go-nsq code.)
func (c *Conn) Flush() error {
	return c.write(writeRequest{done: make(chan error, 1)})
}

func (c *Conn) write(req writeRequest) error {
	switch c.state.Load() {
	case stateConnected:
	case stateClosed:
		return ErrClosing
	default:
		return ErrNotConnected
	}
	select {
	case c.writeChan <- req:
	case <-c.exitChan:
		return ErrClosing
	}
	select {
	case err := <-req.done:
		return err
	case <-c.exitChan:
		select {
		case err := <-req.done:
			return err
		default:
			return ErrClosing
		}
	}
}

// teardown is the one way a connection ends; the first call records err,
// closes the socket and releases the goroutines, later calls do nothing.
func (c *Conn) teardown(err error) {
	c.closeOnce.Do(func() {
		c.err = err
		prev := c.state.Swap(stateClosed)
		close(c.exitChan)
		c.connMu.Lock()
		if c.conn != nil {
			c.conn.Close()
		}
		c.connMu.Unlock()
		// A connection that never finished Connect reports its error from
		// Connect only: the delegate hears of connections it could use.
		if prev == stateConnected && err != ErrClosing {
			c.delegate.OnIOError(c, err)
		}
	})
}

// goroutineDone is called by each of the two goroutines as it exits.
func (c *Conn) goroutineDone() {
	if c.running.Add(-1) == 0 {
		c.delegate.OnClose(c)
	}
}

// closeErr returns why the connection ended. Only valid once it has.
func (c *Conn) closeErr() error {
	<-c.exitChan
	return c.err
}

// testHookDialAddr, set only by the package's tests, maps the address a
// Conn dials to the one it really connects to: the examples publish to
// nsqd's default address, which their test points at an nsqd of its own.
var testHookDialAddr func(addr string) string

// connect dials and performs the handshake, honouring ctx.
func (c *Conn) connect(ctx context.Context) (*IdentifyResponse, error) {
	if !c.state.CompareAndSwap(stateInit, stateConnecting) {
		return nil, ErrAlreadyConnected
	}
	resp, err := c.handshake(ctx)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("connecting to nsqd at %s: %w", c.addr, ctxErr)
		}
		c.teardown(err)
		return nil, err
	}
	if !c.state.CompareAndSwap(stateConnecting, stateConnected) {
		// Closed while connecting.
		return nil, c.closeErr()
	}
	c.running.Store(2)
	go c.readLoop()
	go c.writeLoop()
	return resp, nil
}

func (c *Conn) handshake(ctx context.Context) (*IdentifyResponse, error) {
	addr := c.addr
	if testHookDialAddr != nil {
		addr = testHookDialAddr(addr)
	}
	dialer := net.Dialer{Timeout: c.config.DialTimeout, LocalAddr: c.config.LocalAddr}
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if err := c.setConn(conn); err != nil {
		return nil, err
	}
	// A cancelled ctx interrupts whatever step is blocked.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	br := bufio.NewReaderSize(conn, 16<<10)
	c.fr = frameReader{r: br, limit: c.config.MaxFrameSize}
	c.bw = bufio.NewWriterSize(conn, 64<<10)

	if _, err := c.bw.Write(MagicV2); err != nil {
		return nil, err
	}
	resp, err := c.identify()
	if err != nil {
		return nil, err
	}
	if c.config.TlsV1 && !resp.TLSv1 {
		// Not silently in plaintext what was meant to be encrypted.
		return nil, fmt.Errorf("nsq: tls_v1 is set but nsqd at %s did not agree to TLS (is it started with --tls-cert and --tls-key?)", c.addr)
	}
	if resp.TLSv1 {
		if br.Buffered() > 0 {
			return nil, errors.New("nsq: unexpected data from nsqd before the TLS upgrade")
		}
		if br, err = c.upgradeTLS(ctx); err != nil {
			return nil, err
		}
	}
	switch {
	case resp.Snappy:
		c.fr.r = snappy.NewReader(br)
		sw := snappy.NewBufferedWriter(c.conn)
		c.bw.Reset(sw)
		c.flushers = []interface{ Flush() error }{sw}
		if err := c.expectOK("snappy upgrade"); err != nil {
			return nil, err
		}
	case resp.Deflate:
		c.fr.r = flate.NewReader(br)
		raw := bufio.NewWriterSize(c.conn, 64<<10)
		fw, err := flate.NewWriter(raw, c.config.DeflateLevel)
		if err != nil {
			return nil, err
		}
		c.bw.Reset(fw)
		c.flushers = []interface{ Flush() error }{fw, raw}
		if err := c.expectOK("deflate upgrade"); err != nil {
			return nil, err
		}
	}
	if resp.AuthRequired {
		if err := c.auth(); err != nil {
			return nil, err
		}
	}
	conn.SetDeadline(time.Time{})
	return resp, nil
}

// setConn makes nc the connection, unless Close came first.
func (c *Conn) setConn(nc net.Conn) error {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if c.state.Load() == stateClosed {
		nc.Close()
		return ErrClosing
	}
	c.conn = nc
	return nil
}

// identify sends IDENTIFY and reads nsqd's answer.
func (c *Conn) identify() (*IdentifyResponse, error) {
	cfg := c.config
	ci := map[string]interface{}{
		"client_id":             cfg.ClientID,
		"hostname":              cfg.Hostname,
		"user_agent":            cfg.UserAgent,
		"short_id":              cfg.ClientID, // nsqd before 1.0
		"long_id":               cfg.Hostname, // nsqd before 1.0
		"feature_negotiation":   true,
		"tls_v1":                cfg.TlsV1,
		"deflate":               cfg.Deflate,
		"deflate_level":         cfg.DeflateLevel,
		"snappy":                cfg.Snappy,
		"sample_rate":           cfg.SampleRate,
		"heartbeat_interval":    millis(cfg.HeartbeatInterval),
		"output_buffer_size":    cfg.OutputBufferSize,
		"output_buffer_timeout": millis(cfg.OutputBufferTimeout),
		"msg_timeout":           int64(cfg.MsgTimeout / time.Millisecond),
	}
	cmd, err := Identify(ci)
	if err != nil {
		return nil, ErrIdentify{Reason: err.Error()}
	}
	if err := c.writeHandshake(cmd); err != nil {
		return nil, err
	}
	typ, data, err := c.readHandshake()
	if err != nil {
		return nil, err
	}
	if typ == FrameTypeError {
		return nil, ErrIdentify{Reason: string(data)}
	}
	resp := &IdentifyResponse{}
	if string(data) == respOK {
		// An nsqd without feature negotiation.
		return resp, nil
	}
	if err := json.Unmarshal(data, resp); err != nil {
		return nil, ErrIdentify{Reason: fmt.Sprintf("cannot read nsqd's IDENTIFY response %q: %s", data, err)}
	}
	c.logf(LogLevelDebug, "(%s) IDENTIFY response: %s", c.addr, data)
	return resp, nil
}

// millis converts a duration option to what IDENTIFY expects: milliseconds,
// with -1 (off) kept as -1.
func millis(d time.Duration) int64 {
	if d < 0 {
		return -1
	}
	return int64(d / time.Millisecond)
}

// upgradeTLS performs the TLS handshake and switches the reader and writer
// to the TLS connection; it returns the new buffered reader.
func (c *Conn) upgradeTLS(ctx context.Context) (*bufio.Reader, error) {
	conf := &tls.Config{}
	if c.config.TlsConfig != nil {
		conf = c.config.TlsConfig.Clone()
	}
	if conf.ServerName == "" {
		host, _, err := net.SplitHostPort(c.addr)
		if err != nil {
			return nil, err
		}
		conf.ServerName = host
	}
	tlsConn := tls.Client(c.conn, conf)
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second) // nsqd's own limit
	defer cancel()
	if err := tlsConn.HandshakeContext(hctx); err != nil {
		return nil, fmt.Errorf("nsq: TLS handshake with %s: %w", c.addr, err)
	}
	if err := c.setConn(tlsConn); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(tlsConn, 16<<10)
	c.fr.r = br
	c.bw.Reset(tlsConn)
	return br, c.expectOK("TLS upgrade")
}

func (c *Conn) auth() error {
	if c.config.AuthSecret == "" {
		return fmt.Errorf("nsq: nsqd at %s requires AUTH (auth_required) but Config.AuthSecret is empty", c.addr)
	}
	cmd, _ := Auth(c.config.AuthSecret)
	if err := c.writeHandshake(cmd); err != nil {
		return err
	}
	typ, data, err := c.readHandshake()
	if err != nil {
		return err
	}
	if typ == FrameTypeError {
		return fmt.Errorf("nsq: AUTH refused by nsqd at %s: %w", c.addr, ErrProtocol{Reason: string(data)})
	}
	var resp AuthResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return fmt.Errorf("nsq: cannot read nsqd's AUTH response %q: %w", data, err)
	}
	c.logf(LogLevelInfo, "(%s) AUTH accepted: identity %q (%s) with %d permissions",
		c.addr, resp.Identity, resp.IdentityUrl, resp.PermissionCount)
	return nil
}

func (c *Conn) writeHandshake(cmd *Command) error {
	c.conn.SetWriteDeadline(time.Now().Add(c.config.WriteTimeout))
	cmd.WriteTo(c.bw)
	return c.flush()
}

func (c *Conn) readHandshake() (int32, []byte, error) {
	c.conn.SetReadDeadline(time.Now().Add(c.config.ReadTimeout))
	for {
		typ, data, err := c.fr.next()
		if err != nil {
			return typ, nil, err
		}
		if typ == FrameTypeResponse && string(data) == respHeartbeat {
			continue
		}
		return typ, data, nil
	}
}

// expectOK reads the OK nsqd sends after an upgrade.
func (c *Conn) expectOK(step string) error {
	typ, data, err := c.readHandshake()
	if err != nil {
		return fmt.Errorf("nsq: %s: %w", step, err)
	}
	if typ != FrameTypeResponse || string(data) != respOK {
		return fmt.Errorf("nsq: %s: nsqd answered %q", step, data)
	}
	return nil
}

// flush flushes the buffered writer and then each compressor under it.
func (c *Conn) flush() error {
	if err := c.bw.Flush(); err != nil {
		return err
	}
	for _, f := range c.flushers {
		if err := f.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Conn) readLoop() {
	defer c.goroutineDone()
	for {
		if c.writeErr.Load() == nil {
			c.conn.SetReadDeadline(time.Now().Add(c.config.ReadTimeout))
			if c.writeErr.Load() != nil {
				// The write goroutine failed meanwhile: keep its deadline.
				c.conn.SetReadDeadline(time.Unix(0, c.drainBy.Load()))
			}
		}
		typ, data, err := c.fr.next()
		if err != nil {
			if werr := c.writeErr.Load(); werr != nil {
				err = *werr // the first failure says more
			} else {
				err = c.ioError("read", err)
			}
			c.teardown(err)
			return
		}
		switch typ {
		case FrameTypeResponse:
			switch string(data) {
			case respHeartbeat:
				c.delegate.OnHeartbeat(c)
				select {
				case c.nopChan <- struct{}{}:
				default: // one is due already
				}
			case respOK:
				c.delegate.OnResponse(c, okBytes)
			default:
				c.delegate.OnResponse(c, append([]byte(nil), data...))
			}
		case FrameTypeError:
			c.delegate.OnError(c, append([]byte(nil), data...))
		default:
			c.teardown(&FrameError{Reason: fmt.Sprintf("unexpected frame type %d on a producer connection", typ)})
			return
		}
	}
}

// writeFailed handles a failed write. A write that timed out ends the
// connection at once. Any other (a reset, a broken pipe) most likely means
// nsqd closed the connection, maybe just after an error frame explaining why
// (nsqd closes on every publish error): the read goroutine reads until the
// end of the stream, for at most a second more, and ends the connection.
func (c *Conn) writeFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.teardown(err)
		return
	}
	drainBy := time.Now().Add(time.Second)
	c.drainBy.Store(drainBy.UnixNano())
	c.writeErr.Store(&err)
	c.conn.SetReadDeadline(drainBy)
}

// ioError describes an I/O failure; a deadline turns into a sentence that
// names the option.
func (c *Conn) ioError(op string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if op == "read" {
			return fmt.Errorf("nsq: no frame from nsqd at %s within read_timeout (%s): %w", c.addr, c.config.ReadTimeout, err)
		}
		return fmt.Errorf("nsq: nsqd at %s did not take our bytes within write_timeout (%s): %w", c.addr, c.config.WriteTimeout, err)
	}
	switch err {
	case io.EOF:
		return fmt.Errorf("nsq: nsqd at %s closed the connection: %w", c.addr, err)
	case io.ErrUnexpectedEOF:
		return fmt.Errorf("nsq: nsqd at %s closed the connection in the middle of a frame: %w", c.addr, err)
	}
	return err
}

func (c *Conn) writeLoop() {
	defer c.goroutineDone()
	for {
		select {
		case req := <-c.writeChan:
			err := c.writeRequest(req)
			if req.done != nil {
				req.done <- err
			}
			for _, tx := range req.nops {
				tx.Error = err
				tx.doneChan <- tx // a Ping's: capacity 1, never blocks
			}
			if err != nil {
				c.writeFailed(err)
				return
			}
		case <-c.nopChan:
			c.conn.SetWriteDeadline(time.Now().Add(c.config.WriteTimeout))
			c.bw.WriteString("NOP\n")
			if err := c.flush(); err != nil {
				c.writeFailed(c.ioError("write", err))
				return
			}
		case <-c.exitChan:
			return
		}
	}
}

// writeRequest encodes a request and flushes it once.
func (c *Conn) writeRequest(req writeRequest) error {
	c.conn.SetWriteDeadline(time.Now().Add(c.config.WriteTimeout))
	if req.cmd != nil {
		req.cmd.WriteTo(c.bw)
	}
	if err := c.encodeTxs(req.txs); err != nil {
		return c.ioError("write", err)
	}
	for range req.nops {
		c.bw.WriteString("NOP\n")
	}
	if err := c.flush(); err != nil {
		return c.ioError("write", err)
	}
	return nil
}

// encodeTxs encodes a batch built by the router: each command starts with a
// transaction whose n says how many transactions it carries. Once a
// command's bytes may have reached nsqd, its transactions may be answered
// and reused: everything needed from them is read before they are written.
func (c *Conn) encodeTxs(txs []*ProducerTransaction) error {
	var written int64
	for i := 0; i < len(txs); {
		tx := txs[i]
		n, kind, topic, body, bodies, delay, size := tx.n, tx.kind, tx.topic, tx.body, tx.bodies, tx.delay, tx.size
		var err error
		switch {
		case kind == kindPUB && n == 1:
			written += int64(len(body))
			err = writePUB(c.bw, topic, body)
		case kind == kindPUB:
			// An automatic MPUB. nsqd answers it only once it has read it
			// all (or refused it, which the router settles only after this
			// goroutine has exited).
			group := txs[i : i+n]
			size := int64(4)
			for _, t := range group {
				size += 4 + int64(len(t.body))
			}
			written += size
			err = writeMPUB(c.bw, topic, size, n, func(j int) []byte { return group[j].body })
		case kind == kindDPUB:
			written += int64(len(body))
			err = writeDPUB(c.bw, topic, delay, body)
		case kind == kindMPUB && bodies != nil:
			written += size // the MPUB body size, from the call's check
			err = writeMPUB(c.bw, topic, size, len(bodies), func(j int) []byte { return bodies[j] })
		case kind == kindMPUB:
			written += int64(len(body))
			err = writeMPUBEncoded(c.bw, topic, body)
		}
		if err != nil {
			return err
		}
		if written > 1<<20 {
			// A long batch: give each MiB its own write_timeout.
			written = 0
			c.conn.SetWriteDeadline(time.Now().Add(c.config.WriteTimeout))
		}
		i += n
	}
	return nil
}
