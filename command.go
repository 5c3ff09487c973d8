package nsq

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
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

// The producer's publish path encodes straight into the connection's
// buffered writer: the command line and sizes go into the writer's free
// space, bodies are copied once, into the buffer (or written through when
// larger than it). Nothing is allocated per publish.

// maxHeader is the longest command line plus size prefix the encoders write
// in one piece: "DPUB " + a 64-byte topic + " " + 20 digits + "\n" + 8 bytes.
const maxHeader = 128

// headerBuf returns the writer's free space for a header, flushing first
// when there is too little so that appending never allocates.
func headerBuf(w *bufio.Writer) ([]byte, error) {
	if w.Available() < maxHeader {
		if err := w.Flush(); err != nil {
			return nil, err
		}
	}
	return w.AvailableBuffer(), nil
}

// writePUB encodes "PUB topic\n[size][body]".
func writePUB(w *bufio.Writer, topic string, body []byte) error {
	return writeCommand(w, "PUB", topic, "", body)
}

// writeMPUBEncoded encodes "MPUB topic\n[size]" followed by a body already
// encoded by encodeMPUBBody.
func writeMPUBEncoded(w *bufio.Writer, topic string, body []byte) error {
	return writeCommand(w, "MPUB", topic, "", body)
}

// writeDPUB encodes "DPUB topic ms\n[size][body]".
func writeDPUB(w *bufio.Writer, topic string, delay time.Duration, body []byte) error {
	var digits [20]byte
	ms := strconv.AppendInt(digits[:0], int64(delay/time.Millisecond), 10)
	return writeCommand(w, "DPUB", topic, string(ms), body)
}

// writeCommand encodes "<name> topic[ arg]\n[size][body]".
func writeCommand(w *bufio.Writer, name, topic, arg string, body []byte) error {
	b, err := headerBuf(w)
	if err != nil {
		return err
	}
	if arg == "" {
		b = appendHeader(b, name, int64(len(body)), topic)
	} else {
		b = appendHeader(b, name, int64(len(body)), topic, arg)
	}
	w.Write(b)
	_, err = w.Write(body)
	return err
}

// writeMPUBHeader encodes "MPUB topic\n[body size][count]"; the messages
// follow, each through writeMPUBMessage.
func writeMPUBHeader(w *bufio.Writer, topic string, bodySize int64, count int) error {
	b, err := headerBuf(w)
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
func writeMPUB(w *bufio.Writer, topic string, size int64, n int, at func(int) []byte) error {
	err := writeMPUBHeader(w, topic, size, n)
	for i := 0; i < n && err == nil; i++ {
		err = writeMPUBMessage(w, at(i))
	}
	return err
}

// writeMPUBMessage encodes one message of an MPUB: "[size][body]".
func writeMPUBMessage(w *bufio.Writer, body []byte) error {
	b, err := headerBuf(w)
	if err != nil {
		return err
	}
	w.Write(binary.BigEndian.AppendUint32(b, uint32(len(body))))
	_, err = w.Write(body)
	return err
}
