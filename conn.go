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

// ConnDelegate receives what a [Conn] reads from nsqd. OnResponse, OnError
// and OnHeartbeat are called from the connection's read goroutine, one at a
// time; OnIOError from the read or the write goroutine, whichever found the
// connection broken; OnClose from the last of the two to finish. The data
// slices are the delegate's own: it may keep and change them. A callback may
// call any method of the Conn, Close included.
//
// It is the part of go-nsq's ConnDelegate a producer needs: a type written
// for go-nsq's (larger) interface satisfies it.
type ConnDelegate interface {
	// OnResponse is called for each response frame but heartbeats.
	OnResponse(*Conn, []byte)
	// OnError is called for each error frame.
	OnError(*Conn, []byte)
	// OnIOError is called at most once, with the error that broke the
	// connection; not when Close ended it.
	OnIOError(*Conn, error)
	// OnHeartbeat is called for each heartbeat; the Conn answers it with NOP.
	OnHeartbeat(*Conn)
	// OnClose is called once for a Conn whose Connect succeeded, when its
	// read and write goroutines are done, after every other callback.
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
	logf     func(lvl LogLevel, format string, args ...any)           // never nil
	dial     func(ctx context.Context, addr string) (net.Conn, error) // nil: TCP; tests on virtual time set it

	// Written by connect under connMu (teardown may read it meanwhile), then
	// read-only.
	connMu sync.Mutex
	conn   net.Conn // the TCP connection, or the TLS one over it
	raw    net.Conn // the TCP connection: what teardown closes

	// Owned by connect, then by the read goroutine.
	fr frameReader
	// Owned by connect, then by the write goroutine.
	wb       *wireBuf                     // gathers on a plain connection (see wireBuf)
	flushers []interface{ Flush() error } // compressor layers under wb, flushed after it
	wdAt     time.Time                    // the write deadline as last set by the write goroutine; zero: none
	oldest   bool                         // the request being written holds the oldest unanswered commands

	// okFrame is what OnResponse gets for each "OK" when the delegate only
	// reads it (the Producer's): one slice per Conn, so that an OK costs no
	// allocation. nil for any other delegate, which gets a fresh slice.
	okFrame []byte

	state     atomic.Int32          // connState
	writeChan chan writeRequest     // to the write goroutine; unbuffered: a send succeeds when it is idle
	nopChan   chan struct{}         // a NOP is due; capacity 1
	exitChan  chan struct{}         // closed by teardown
	dying     atomic.Bool           // set by the first teardown; later ones return at once
	err       error                 // why the connection ended: written before exitChan is closed
	running   atomic.Int32          // goroutines still running; the last one out calls OnClose
	writeErr  atomic.Pointer[error] // set when the write goroutine failed; the reader drains and ends

	// The read deadline follows read_timeout's meaning: nsqd has not
	// answered the oldest unanswered command for that long (counted from
	// when it was written, or from the previous answer), or, with no command
	// unanswered and heartbeats on, has sent nothing for that long. With
	// nothing unanswered and heartbeats off there is no deadline: an idle
	// connection stays open. The write goroutine counts the commands it
	// writes, the read goroutine the answers it reads; both set the
	// deadline under rdMu, so that neither undoes the other's.
	rdMu       sync.Mutex
	rdAt       time.Time // the read deadline as last set; zero: none
	unanswered int       // commands written whose answer has not been read
	heartbeats bool      // nsqd sends heartbeats (heartbeat_interval is not -1); read-only
	draining   bool      // the write goroutine failed: the deadline is the drain's, left alone
}

type connState = int32

const (
	stateInit connState = iota
	stateConnecting
	stateConnected
	stateClosed
)

// errNotWritten is what the write goroutine reports for a request it took
// after its connection was torn down: not a byte of it was written.
var errNotWritten = fmt.Errorf("%w: nothing written", ErrClosing)

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
	c := &Conn{
		addr:      addr,
		config:    config,
		delegate:  delegate,
		logf:      func(LogLevel, string, ...any) {},
		writeChan: make(chan writeRequest),
		nopChan:   make(chan struct{}, 1),
		exitChan:  make(chan struct{}),
	}
	if _, ok := delegate.(frameReadOnly); ok {
		c.okFrame = []byte(respOK)
	}
	c.heartbeats = identifyMillis(config.HeartbeatInterval) != -1
	return c
}

// frameReadOnly is implemented by the package's own delegates, which never
// keep or change the frame data they are given.
type frameReadOnly interface{ readsFramesOnly() }

func (producerConnDelegate) readsFramesOnly() {}

// String returns the nsqd address given to NewConn.
func (c *Conn) String() string { return c.addr }

// RemoteAddr returns the address of nsqd once Connect has reached it (also
// after the connection closed), or nil when no connection was made: before
// Connect, after a Close that came first, or when dialling failed.
func (c *Conn) RemoteAddr() net.Addr {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if c.conn == nil {
		return nil
	}
	return c.conn.RemoteAddr()
}

// Connect dials nsqd, performs the handshake and starts the connection's
// read and write goroutines. It returns nsqd's answer to IDENTIFY.
func (c *Conn) Connect() (*IdentifyResponse, error) {
	return c.connect(context.Background())
}

// Close tears the connection down at once: the socket is closed and the
// goroutines exit; the last of them calls the delegate's OnClose. Close does
// not wait for that. It may be called more than once, before Connect, and
// from the delegate's callbacks, and always returns nil.
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

// teardown is the one way a connection ends. The first call records err,
// closes the socket, releases the goroutines and calls OnIOError; every
// later call returns at once, without waiting for the first to finish, so
// that a delegate may call Close from OnIOError or any other callback. It
// holds no lock while it calls the delegate.
func (c *Conn) teardown(err error) {
	if c.dying.Swap(true) {
		return
	}
	c.err = err
	prev := c.state.Swap(stateClosed)
	close(c.exitChan)
	c.connMu.Lock()
	if c.raw != nil {
		// The transport, never the TLS layer: tls.Conn.Close writes a
		// close_notify, which blocks (under its own 5 s deadline, and
		// behind a write in progress) when nsqd has stopped reading.
		// nsqd does not wait for one.
		c.raw.Close()
	}
	c.connMu.Unlock()
	// A connection that never finished Connect reports its error from
	// Connect only: the delegate hears of connections it could use.
	if prev == stateConnected && err != ErrClosing {
		c.delegate.OnIOError(c, err)
	}
}

// goroutineDone is called by each of the two goroutines as its last act;
// the second calls OnClose.
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
	c.rdMu.Lock()
	c.armReadDeadline()
	c.rdMu.Unlock()
	c.running.Store(2)
	go c.readLoop()
	go c.writeLoop()
	return resp, nil
}

func (c *Conn) handshake(ctx context.Context) (*IdentifyResponse, error) {
	dial := c.dial
	if dial == nil {
		dialer := net.Dialer{Timeout: c.config.DialTimeout, LocalAddr: c.config.LocalAddr}
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return dialContext(ctx, &dialer, addr) }
	}
	conn, err := dial(ctx, c.addr)
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
	c.wb = newWireBuf(conn, 64<<10)

	if _, err := c.wb.Write(MagicV2); err != nil {
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
		c.wb.reset(sw)
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
		c.wb.reset(fw)
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
	// Large bodies go from where they are to the socket, with the rest of
	// their batch, in one writev; TLS and compression take copies.
	c.wb.gather = c.conn == c.raw && c.flushers == nil
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
	if c.raw == nil {
		c.raw = nc
	}
	return nil
}

// identify sends IDENTIFY and reads nsqd's answer.
func (c *Conn) identify() (*IdentifyResponse, error) {
	cfg := c.config
	ci := map[string]any{
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
		"heartbeat_interval":    identifyMillis(cfg.HeartbeatInterval),
		"output_buffer_size":    cfg.OutputBufferSize,
		"output_buffer_timeout": identifyMillis(cfg.OutputBufferTimeout),
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
	switch typ {
	case FrameTypeResponse:
	case FrameTypeError:
		return nil, ErrIdentify{Reason: string(data)}
	default:
		return nil, ErrIdentify{Reason: fmt.Sprintf("nsqd answered IDENTIFY with a frame of type %d", typ)}
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

// identifyMillis converts a duration option to what IDENTIFY carries, as
// go-nsq does: whole milliseconds (truncated toward zero), and -1 for a
// duration of -1ns (time.Duration(-1)). nsqd reads -1 as "off" and 0 as
// "its default"; Config.Validate refuses the heartbeat intervals nsqd would
// refuse or misread.
func identifyMillis(d time.Duration) int64 {
	if d == -1 {
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
	c.wb.reset(tlsConn)
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
	switch typ {
	case FrameTypeResponse:
	case FrameTypeError:
		return fmt.Errorf("nsq: AUTH refused by nsqd at %s: %w", c.addr, ErrProtocol{Reason: string(data)})
	default:
		return &FrameError{Reason: fmt.Sprintf("nsqd at %s answered AUTH with a frame of type %d", c.addr, typ)}
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
	cmd.WriteTo(c.wb)
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

// flush flushes the write buffer and then each compressor under it.
func (c *Conn) flush() error {
	if err := c.wb.flush(); err != nil {
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
		c.frameRead(typ, data)
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
				ok := c.okFrame
				if ok == nil {
					ok = []byte(respOK)
				}
				c.delegate.OnResponse(c, ok)
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
	c.writeErr.Store(&err)
	c.rdMu.Lock()
	c.draining = true
	c.rdAt = time.Now().Add(time.Second)
	c.conn.SetReadDeadline(c.rdAt)
	c.rdMu.Unlock()
}

// armReadDeadline sets the read deadline for the state under rdMu.
func (c *Conn) armReadDeadline() {
	switch {
	case c.draining:
	case c.unanswered > 0 || c.heartbeats:
		c.setReadDeadline(time.Now().Add(c.config.ReadTimeout))
	default:
		c.setReadDeadline(time.Time{})
	}
}

// setReadDeadline sets the read deadline to at (zero: none), under rdMu.
// A deadline that would move later by less than a millisecond (a hundredth
// of read_timeout, if that is less) is left where it is: in a stream of
// publishes it is set about once a millisecond instead of three times a
// publish, and read_timeout runs out at most that much early.
func (c *Conn) setReadDeadline(at time.Time) {
	if at.IsZero() == c.rdAt.IsZero() {
		if d := at.Sub(c.rdAt); d >= 0 && d < deadlineSlack(c.config.ReadTimeout) {
			return
		}
	}
	c.rdAt = at
	c.conn.SetReadDeadline(at)
}

// commandsWriting is called by the write goroutine before it writes n
// commands nsqd answers, once it has set the write deadline. It reports
// whether they are the oldest unanswered ones: then read_timeout starts
// once they are written (commandsWritten), and while they are being
// written no read deadline can end the connection (write_timeout watches
// the write).
func (c *Conn) commandsWriting(n int) (oldest bool) {
	if n == 0 {
		return false
	}
	c.rdMu.Lock()
	c.unanswered += n
	oldest = c.unanswered == n
	if oldest {
		c.readDeadlineAfterWrite() // without heartbeats there is none already
	}
	c.rdMu.Unlock()
	return oldest
}

// readDeadlineAfterWrite, under rdMu, called by the write goroutine while it
// writes the oldest unanswered commands, removes the read deadline unless it
// falls a write_timeout or more after the write deadline: the write ends
// (written, or failed at its deadline) well before it, as if there were
// none. So in a stream of sync publishes, where the deadline set at the
// last answer is a read_timeout away, it is left alone.
func (c *Conn) readDeadlineAfterWrite() {
	if c.heartbeats && !c.draining && !c.rdAt.IsZero() && c.rdAt.Sub(c.wdAt) < c.config.WriteTimeout {
		c.setReadDeadline(time.Time{})
	}
}

// writeDeadlineMoved is called by the write goroutine when it gives a long
// batch a new write deadline: a read deadline left in place for the write
// of the oldest unanswered commands must still fall well after it.
func (c *Conn) writeDeadlineMoved() {
	if !c.oldest {
		return
	}
	c.rdMu.Lock()
	if c.unanswered > 0 {
		c.readDeadlineAfterWrite()
	}
	c.rdMu.Unlock()
}

// commandsWritten is called by the write goroutine once the oldest
// unanswered commands are written: read_timeout starts, unless nsqd
// answered them meanwhile.
func (c *Conn) commandsWritten() {
	c.rdMu.Lock()
	if c.unanswered > 0 {
		c.armReadDeadline()
	}
	c.rdMu.Unlock()
}

// frameRead is called by the read goroutine for each frame: an answer
// (any response but a heartbeat, or an error) restarts read_timeout for the
// next unanswered command; a heartbeat restarts it only when none is
// unanswered.
func (c *Conn) frameRead(typ int32, data []byte) {
	heartbeat := typ == FrameTypeResponse && string(data) == respHeartbeat
	c.rdMu.Lock()
	if !heartbeat && c.unanswered > 0 {
		c.unanswered--
	}
	if !heartbeat || c.unanswered == 0 {
		c.armReadDeadline()
	}
	c.rdMu.Unlock()
}

// answered returns how many answers nsqd sends to cmd: none to NOP and to
// the consumer commands RDY, FIN, REQ and TOUCH (unless they fail), one to
// every other command.
func (cmd *Command) answered() int {
	switch string(cmd.Name) {
	case "NOP", "RDY", "FIN", "REQ", "TOUCH":
		return 0
	}
	return 1
}

// ioError describes an I/O failure; a deadline turns into a sentence that
// names the option.
func (c *Conn) ioError(op string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if op == "read" {
			c.rdMu.Lock()
			unanswered := c.unanswered
			c.rdMu.Unlock()
			if unanswered == 0 {
				return fmt.Errorf("nsq: no heartbeat from nsqd at %s within read_timeout (%s): %w", c.addr, c.config.ReadTimeout, err)
			}
			return fmt.Errorf("nsq: nsqd at %s did not answer within read_timeout (%s): %w", c.addr, c.config.ReadTimeout, err)
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
			var err error
			select {
			case <-c.exitChan:
				// Taken after teardown (select chose at random): none of
				// it is written, and the router must know.
				err = errNotWritten
			default:
				err = c.encodeAndFlush(req)
			}
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
			c.armWriteDeadline()
			c.wb.WriteString("NOP\n")
			if err := c.flush(); err != nil {
				c.writeFailed(c.ioError("write", err))
				return
			}
		case <-c.exitChan:
			return
		}
	}
}

// armWriteDeadline gives the write about to begin write_timeout. The
// deadline is moved only when it would move by a millisecond or more (a
// hundredth of write_timeout, if that is less): under a stream of writes
// it is set about once a millisecond instead of once a write, and a write
// gets at least write_timeout minus that.
func (c *Conn) armWriteDeadline() {
	at := time.Now().Add(c.config.WriteTimeout)
	if d := at.Sub(c.wdAt); !c.wdAt.IsZero() && d >= 0 && d < deadlineSlack(c.config.WriteTimeout) {
		return
	}
	c.wdAt = at
	c.conn.SetWriteDeadline(at)
}

// deadlineSlack is how much earlier than exact a deadline of timeout may
// be left, rather than moved: setting one costs a lock and a timer update
// in the runtime's poller, on the critical path of every sync publish.
func deadlineSlack(timeout time.Duration) time.Duration {
	return min(time.Millisecond, timeout/100)
}

// encodeAndFlush encodes a request and flushes it once.
func (c *Conn) encodeAndFlush(req writeRequest) error {
	answers := commandCount(req.txs)
	if req.cmd != nil {
		answers += req.cmd.answered()
	}
	c.armWriteDeadline()
	oldest := c.commandsWriting(answers)
	c.oldest = oldest
	if req.cmd != nil {
		req.cmd.WriteTo(c.wb)
	}
	if err := c.encodeTxs(req.txs); err != nil {
		return c.ioError("write", err)
	}
	for range req.nops {
		c.wb.WriteString("NOP\n")
	}
	if err := c.flush(); err != nil {
		return c.ioError("write", err)
	}
	if oldest {
		c.commandsWritten()
	}
	return nil
}

// commandCount returns how many commands encodeTxs writes for txs.
func commandCount(txs []*ProducerTransaction) int {
	n := 0
	for i := 0; i < len(txs); i += txs[i].n {
		if txs[i].kind < kindNOP {
			n++
		}
	}
	return n
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
		case n > 1:
			// An automatic MPUB of the messages of n publishes (PUBs, and
			// MultiPublishes), whose body size and message count the router
			// recorded on its head. nsqd answers it only once it has read
			// it all (or refused it, which the router settles only after
			// this goroutine has exited).
			written += tx.groupSize
			err = writeGroup(c.wb, topic, tx.groupSize, tx.groupCount, txs[i:i+n])
		case kind == kindPUB:
			written += int64(len(body))
			err = writePUB(c.wb, topic, body)
		case kind == kindDPUB:
			written += int64(len(body))
			err = writeDPUB(c.wb, topic, delay, body)
		case kind == kindMPUB && bodies != nil:
			written += size // the MPUB body size, from the call's check
			err = writeMPUB(c.wb, topic, size, len(bodies), func(j int) []byte { return bodies[j] })
		case kind == kindMPUB:
			written += int64(len(body))
			err = writeMPUBEncoded(c.wb, topic, body)
		}
		if err != nil {
			return err
		}
		if written > 1<<20 {
			// A long batch: give each MiB its own write_timeout. The
			// bodies gathered so far go out under the deadline in force.
			if err := c.wb.flushGathered(); err != nil {
				return err
			}
			written = 0
			c.armWriteDeadline()
			c.writeDeadlineMoved()
		}
		i += n
	}
	return nil
}
