package nsq

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"
)

// Command is one command of the nsqd TCP protocol: a line of Name and Params
// separated by spaces, then, when Body is not nil, a 4-byte big-endian size
// and the body. The Producer does not build Commands on its publish path (it
// encodes publishes straight into the connection's write buffer); they are
// for code that talks to nsqd through a [Conn].
type Command struct {
	Name   []byte
	Params [][]byte
	Body   []byte
}

// String returns the command's line without the trailing newline and body,
// for example "PUB mytopic".
func (c *Command) String() string {
	if len(c.Params) > 0 {
		return string(c.Name) + " " + string(bytes.Join(c.Params, []byte(" ")))
	}
	return string(c.Name)
}

// WriteTo writes the command in wire format to w and returns the number of
// bytes written. It makes one Write call for the line and size and one for
// the body.
func (c *Command) WriteTo(w io.Writer) (int64, error) {
	n := len(c.Name) + 1
	for _, p := range c.Params {
		n += 1 + len(p)
	}
	size := int64(-1)
	if c.Body != nil {
		n += 4
		size = int64(len(c.Body))
	}
	buf := appendHeader(make([]byte, 0, n), c.Name, size, c.Params...)
	m, err := w.Write(buf)
	total := int64(m)
	if err != nil || c.Body == nil {
		return total, err
	}
	m, err = w.Write(c.Body)
	return total + int64(m), err
}

// appendHeader appends a command's header to b: its line (name, then each
// param after a space, then '\n') and, when size is not negative, the 4-byte
// big-endian body size. It is the one encoder of command headers, for
// Command.WriteTo and for the producer's direct encoders below.
func appendHeader[S ~string | ~[]byte](b []byte, name S, size int64, params ...S) []byte {
	b = append(b, name...)
	for _, p := range params {
		b = append(b, ' ')
		b = append(b, p...)
	}
	b = append(b, '\n')
	if size >= 0 {
		b = binary.BigEndian.AppendUint32(b, uint32(size))
	}
	return b
}

// Identify creates an IDENTIFY command with js marshalled as its JSON body.
func Identify(js map[string]any) (*Command, error) {
	body, err := json.Marshal(js)
	if err != nil {
		return nil, err
	}
	return &Command{Name: []byte("IDENTIFY"), Body: body}, nil
}

// Auth creates an AUTH command carrying secret.
func Auth(secret string) (*Command, error) {
	return &Command{Name: []byte("AUTH"), Body: []byte(secret)}, nil
}

// Nop creates a NOP command, which nsqd never answers. It is the answer to a
// heartbeat.
func Nop() *Command {
	return &Command{Name: []byte("NOP")}
}

// Publish creates a PUB command: body to topic.
func Publish(topic string, body []byte) *Command {
	return &Command{Name: []byte("PUB"), Params: [][]byte{[]byte(topic)}, Body: body}
}

// DeferredPublish creates a DPUB command: body to topic, delivered to
// consumers no earlier than delay from now ("DPUB topic <milliseconds>").
func DeferredPublish(topic string, delay time.Duration, body []byte) *Command {
	ms := strconv.AppendInt(nil, int64(delay/time.Millisecond), 10)
	return &Command{Name: []byte("DPUB"), Params: [][]byte{[]byte(topic), ms}, Body: body}
}

// MultiPublish creates an MPUB command: bodies to topic, stored all or none.
// The bodies are copied into the command.
func MultiPublish(topic string, bodies [][]byte) (*Command, error) {
	return &Command{Name: []byte("MPUB"), Params: [][]byte{[]byte(topic)}, Body: encodeMPUBBody(bodies, mpubBodySize(bodies))}, nil
}

// mpubBodySize is the size of an MPUB body: the 4-byte count, then a 4-byte
// size before each message.
func mpubBodySize(bodies [][]byte) int64 {
	n := int64(4)
	for _, b := range bodies {
		n += 4 + int64(len(b))
	}
	return n
}

// encodeMPUBBody returns an MPUB body holding copies of bodies; size is
// mpubBodySize(bodies).
func encodeMPUBBody(bodies [][]byte, size int64) []byte {
	return appendMPUBBody(make([]byte, 0, size), bodies)
}

// appendMPUBBody appends the MPUB body of bodies to buf.
func appendMPUBBody(buf []byte, bodies [][]byte) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(bodies)))
	for _, b := range bodies {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(b)))
		buf = append(buf, b...)
	}
	return buf
}

// mpubBodies recycles the MPUB bodies MultiPublishAsync encodes (it copies
// the caller's bodies, as go-nsq does): each goes back once its publish has
// completed, for the next call to encode into, instead of one allocation
// (zeroed, then collected) per call. It is shared by every producer and
// holds at most 8 MiB, in bodies of at most 1 MiB.
var mpubBodies = bodyFreeList{ch: make(chan []byte, 1024), max: 8 << 20, maxBody: 1 << 20}

// bodyFreeList is a free list of byte slices holding at most max bytes of
// capacity. Unlike a sync.Pool, a garbage collection does not empty it: a
// collection comes every few hundred calls when the bodies are large, and
// would leave it empty most of the time.
type bodyFreeList struct {
	ch      chan []byte
	held    atomic.Int64 // capacity of the slices in ch, or on their way in or out
	max     int64        // bound on held
	maxBody int          // larger slices are not kept
}

// get returns an empty slice with room for size bytes: a recycled one when
// the free list has one large enough, else a new one.
func (l *bodyFreeList) get(size int64) []byte {
	select {
	case b := <-l.ch:
		l.held.Add(-int64(cap(b)))
		if int64(cap(b)) >= size {
			return b[:0]
		}
	default:
	}
	return make([]byte, 0, size)
}

// put gives b, which nothing reads or writes any more, to the free list.
func (l *bodyFreeList) put(b []byte) {
	n := int64(cap(b))
	if cap(b) > l.maxBody {
		return
	}
	if l.held.Add(n) > l.max {
		l.held.Add(-n)
		return
	}
	select {
	case l.ch <- b:
	default:
		l.held.Add(-n)
	}
}

// The producer's publish path encodes straight into the write goroutine's
// buffer (wireBuf): the command line and sizes go into its free space,
// bodies are copied once, into the buffer, or on a plain TCP connection
// written from where they are when large. Nothing is allocated per publish.

// maxHeader is the longest command line plus size prefix the encoders write
// in one piece: "DPUB " + a 64-byte topic + " " + 20 digits + "\n" + 8 bytes.
const maxHeader = 128

// gatherMin is the size from which a wireBuf that gathers writes a body
// from where it is instead of copying it into its buffer: below it, the
// copy costs less than another piece in the writev.
const gatherMin = 1 << 10

// maxGather bounds the pieces of one gathered write: Linux takes at most
// 1024 in one writev (IOV_MAX), and Go splits longer ones into several.
const maxGather = 1024

// wireBuf is the buffer the write goroutine encodes into. The bytes of a
// batch accumulate in it and reach the connection in one write when it is
// flushed (or when it is full, for a batch larger than it), as through a
// bufio.Writer.
//
// On a plain connection (no TLS, no compression) it gathers: a body of
// gatherMin bytes or more (MultiPublishAsync's encoded MPUB body, a large
// message) is not copied but referenced, and the flush writes the buffered
// bytes and those bodies, in order, with one writev. A referenced body is
// read until that flush returns: the write goroutine flushes before it
// reports a batch done, so a body is never read once its call has its
// answer. Over TLS or compression every byte is copied into the buffer
// (those layers copy and transform it anyway).
//
// Errors are sticky: once a write has failed, every later call returns
// that error and writes nothing.
type wireBuf struct {
	w      io.Writer
	buf    []byte // encoded, not yet written; its capacity is the buffer's size
	gather bool   // reference large bodies instead of copying them
	err    error  // the first write error

	// With gather, the next write is segs, then buf[from:]: segs holds, in
	// order, the pieces of buf encoded before each referenced body and the
	// bodies themselves.
	segs [][]byte
	from int
	bufs net.Buffers // segs, as written: a field, so that writing allocates nothing
}

// newWireBuf returns a wireBuf of size bytes writing to w, copying.
func newWireBuf(w io.Writer, size int) *wireBuf {
	return &wireBuf{w: w, buf: make([]byte, 0, size)}
}

// reset makes b write to w, discarding whatever was not written.
func (b *wireBuf) reset(w io.Writer) {
	clear(b.segs)
	b.w, b.buf, b.segs, b.from, b.err = w, b.buf[:0], b.segs[:0], 0, nil
}

// available returns the free space in the buffer.
func (b *wireBuf) available() int { return cap(b.buf) - len(b.buf) }

// buffered returns how many bytes a flush would write.
func (b *wireBuf) buffered() int {
	n := len(b.buf) - b.from
	for _, s := range b.segs {
		n += len(s)
	}
	return n
}

// header returns the buffer's free space, emptied first if it holds less
// than maxHeader bytes: a header appended to it is given to Write, which
// then copies nothing.
func (b *wireBuf) header() ([]byte, error) {
	if b.err == nil && b.available() >= maxHeader {
		return b.buf[len(b.buf):], nil
	}
	return b.headerFlushing()
}

// headerFlushing is header when the buffer must be flushed first.
func (b *wireBuf) headerFlushing() ([]byte, error) {
	if err := b.flush(); err != nil {
		return nil, err
	}
	return b.buf[len(b.buf):], nil
}

// Write copies p into the buffer, flushing first when it does not fit; p
// as large as the buffer or larger is then written at once, as a
// bufio.Writer does. It never keeps p.
func (b *wireBuf) Write(p []byte) (int, error) {
	if b.err == nil && len(p) <= b.available() {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	return b.writeFlushing(p)
}

// writeFlushing is Write when p does not fit (or a write failed).
func (b *wireBuf) writeFlushing(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) > b.available() {
		if err := b.flush(); err != nil {
			return 0, err
		}
		if len(p) >= cap(b.buf) {
			n, err := b.w.Write(p)
			if err == nil && n < len(p) {
				err = io.ErrShortWrite
			}
			b.err = err
			return n, err
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// WriteString is Write for a string.
func (b *wireBuf) WriteString(s string) (int, error) {
	if b.err == nil && len(s) <= b.available() {
		b.buf = append(b.buf, s...)
		return len(s), nil
	}
	return b.Write([]byte(s))
}

// body writes a message body (or an encoded MPUB body). When b gathers and
// it has gatherMin bytes or more, it is referenced, not copied: it must
// not change until the next flush has returned.
func (b *wireBuf) body(p []byte) error {
	if len(p) < gatherMin || !b.gather {
		_, err := b.Write(p)
		return err
	}
	return b.reference(p)
}

// reference puts p in the next write without copying it.
func (b *wireBuf) reference(p []byte) error {
	if b.err != nil {
		return b.err
	}
	if len(b.buf) > b.from {
		b.segs = append(b.segs, b.buf[b.from:])
		b.from = len(b.buf)
	}
	b.segs = append(b.segs, p)
	if len(b.segs) >= maxGather-1 { // the last piece of buf may follow
		return b.flush()
	}
	return nil
}

// flush writes everything buffered and referenced, in one write (one
// writev when it gathered bodies, on a connection that has it).
func (b *wireBuf) flush() error {
	if b.err != nil {
		return b.err
	}
	var err error
	switch {
	case len(b.segs) > 0:
		if len(b.buf) > b.from {
			b.segs = append(b.segs, b.buf[b.from:])
		}
		b.bufs = b.segs
		_, err = b.bufs.WriteTo(b.w)
		b.bufs = nil
		clear(b.segs) // keep no body
		b.segs = b.segs[:0]
	case len(b.buf) > 0:
		var n int
		n, err = b.w.Write(b.buf)
		if err == nil && n < len(b.buf) {
			err = io.ErrShortWrite
		}
	}
	b.buf, b.from, b.err = b.buf[:0], 0, err
	return err
}

// flushGathered flushes when bodies are referenced: their bytes then go
// out under the write deadline in force.
func (b *wireBuf) flushGathered() error {
	if len(b.segs) == 0 {
		return b.err
	}
	return b.flush()
}

// writePUB encodes "PUB topic\n[size][body]".
func writePUB(w *wireBuf, topic string, body []byte) error {
	return writeCommand(w, "PUB", topic, "", body)
}

// writeMPUBEncoded encodes "MPUB topic\n[size]" followed by a body already
// encoded by encodeMPUBBody.
func writeMPUBEncoded(w *wireBuf, topic string, body []byte) error {
	return writeCommand(w, "MPUB", topic, "", body)
}

// writeDPUB encodes "DPUB topic ms\n[size][body]".
func writeDPUB(w *wireBuf, topic string, delay time.Duration, body []byte) error {
	var digits [20]byte
	ms := strconv.AppendInt(digits[:0], int64(delay/time.Millisecond), 10)
	return writeCommand(w, "DPUB", topic, string(ms), body)
}

// writeCommand encodes "<name> topic[ arg]\n[size][body]".
func writeCommand(w *wireBuf, name, topic, arg string, body []byte) error {
	if len(body) < gatherMin && w.err == nil && w.available() >= maxHeader+len(body) {
		// The common case, with fewer calls: it fits, and is copied.
		if arg == "" {
			w.buf = appendHeader(w.buf, name, int64(len(body)), topic)
		} else {
			w.buf = appendHeader(w.buf, name, int64(len(body)), topic, arg)
		}
		w.buf = append(w.buf, body...)
		return nil
	}
	b, err := w.header()
	if err != nil {
		return err
	}
	if arg == "" {
		b = appendHeader(b, name, int64(len(body)), topic)
	} else {
		b = appendHeader(b, name, int64(len(body)), topic, arg)
	}
	w.Write(b)
	return w.body(body)
}

// writeMPUBHeader encodes "MPUB topic\n[body size][count]"; the messages
// follow, each through writeMPUBMessage.
func writeMPUBHeader(w *wireBuf, topic string, bodySize int64, count int) error {
	b, err := w.header()
	if err != nil {
		return err
	}
	b = appendHeader(b, "MPUB", bodySize, topic)
	b = binary.BigEndian.AppendUint32(b, uint32(count))
	_, err = w.Write(b)
	return err
}

// writeMPUB encodes an MPUB of n messages, at(0) to at(n-1), whose body
// (count and sized messages) is size bytes.
func writeMPUB(w *wireBuf, topic string, size int64, n int, at func(int) []byte) error {
	err := writeMPUBHeader(w, topic, size, n)
	for i := 0; i < n && err == nil; i++ {
		err = writeMPUBMessage(w, at(i))
	}
	return err
}

// writeGroup encodes an automatic MPUB of count messages, whose body
// (count and sized messages) is size bytes: the messages of group, in
// order. A PUB gives its body; a MultiPublish its bodies, or its encoded
// MPUB body without the count.
func writeGroup(w *wireBuf, topic string, size int64, count int, group []*ProducerTransaction) error {
	err := writeMPUBHeader(w, topic, size, count)
	for _, tx := range group {
		switch {
		case err != nil:
			return err
		case tx.kind == kindPUB:
			err = writeMPUBMessage(w, tx.body)
		case tx.bodies != nil:
			for _, b := range tx.bodies {
				if err = writeMPUBMessage(w, b); err != nil {
					break
				}
			}
		default:
			err = w.body(tx.body[4:])
		}
	}
	return err
}

// writeMPUBMessage encodes one message of an MPUB: "[size][body]".
func writeMPUBMessage(w *wireBuf, body []byte) error {
	if len(body) < gatherMin && w.err == nil && w.available() >= 4+len(body) {
		// The common case, without a call: it fits, and is copied.
		w.buf = binary.BigEndian.AppendUint32(w.buf, uint32(len(body)))
		w.buf = append(w.buf, body...)
		return nil
	}
	b, err := w.header()
	if err != nil {
		return err
	}
	w.Write(binary.BigEndian.AppendUint32(b, uint32(len(body))))
	return w.body(body)
}
