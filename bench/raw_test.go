package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// rawConn is a bare NSQ V2 connection with no library: the ceiling a client
// can reach against this nsqd on this machine. It writes PUB or MPUB
// commands in large chunks without waiting for answers, while a reader
// goroutine counts nsqd's OK frames.
type rawConn struct {
	net.Conn
}

// rawChunk is how many messages go into one Write.
const rawChunk = 1000

func dialRaw(addr string) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte("  V2")); err != nil {
		c.Close()
		return nil, err
	}
	return &rawConn{c}, nil
}

// publish publishes body n times to topic, perCmd messages per command:
// PUB when perCmd is 1, MPUB otherwise. It returns once nsqd has answered
// every command, with the first error.
func (c *rawConn) publish(topic string, body []byte, n, perCmd int) error {
	chunk, chunkCmds := encodeCommands(topic, body, rawChunk, perCmd)
	rest, restCmds := encodeCommands(topic, body, n%rawChunk, perCmd)

	read := make(chan error, 1)
	go func() { read <- c.readOKs(n/rawChunk*chunkCmds + restCmds) }()

	var werr error
	for range n / rawChunk {
		if _, werr = c.Write(chunk); werr != nil {
			break
		}
	}
	if werr == nil && len(rest) > 0 {
		_, werr = c.Write(rest)
	}
	if werr != nil {
		c.Close() // unblocks the reader; its error (an E_ frame) says more
		if rerr := <-read; rerr != nil {
			return rerr
		}
		return werr
	}
	return <-read
}

// encodeCommands encodes msgs messages as PUB commands (perCmd == 1) or as
// MPUB commands of perCmd messages, the last one taking the remainder.
func encodeCommands(topic string, body []byte, msgs, perCmd int) (buf []byte, cmds int) {
	for sent := 0; sent < msgs; sent += perCmd {
		cmds++
		if perCmd == 1 {
			// PUB <topic>\n [ 4-byte size ][ body ]
			buf = fmt.Appendf(buf, "PUB %s\n", topic)
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(body)))
			buf = append(buf, body...)
			continue
		}
		// MPUB <topic>\n [ 4-byte body size ][ 4-byte count ]
		//                [ 4-byte size ][ body ] ... count times
		k := min(perCmd, msgs-sent)
		buf = fmt.Appendf(buf, "MPUB %s\n", topic)
		buf = binary.BigEndian.AppendUint32(buf, uint32(4+k*(4+len(body))))
		buf = binary.BigEndian.AppendUint32(buf, uint32(k))
		for range k {
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(body)))
			buf = append(buf, body...)
		}
	}
	return buf, cmds
}

// readOKs reads frames until it has seen want OK responses. Frames are
// [ 4-byte size ][ 4-byte type ][ data ]; type 0 is a response ("OK", or
// "_heartbeat_", which is ignored: a run is far shorter than nsqd's 60s
// read timeout), type 1 an error.
func (c *rawConn) readOKs(want int) error {
	r := bufio.NewReaderSize(c, 64<<10)
	var hdr [8]byte // outside the loop: it escapes to the heap once, not per frame
	var frame []byte
	for got := 0; got < want; {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return fmt.Errorf("raw: after %d of %d OKs: %w", got, want, err)
		}
		size := binary.BigEndian.Uint32(hdr[:4])
		if size < 4 || size > 1<<20 {
			return fmt.Errorf("raw: bad frame size %d", size)
		}
		if cap(frame) < int(size-4) {
			frame = make([]byte, size-4)
		}
		frame = frame[:size-4]
		if _, err := io.ReadFull(r, frame); err != nil {
			return fmt.Errorf("raw: after %d of %d OKs: %w", got, want, err)
		}
		switch typ := binary.BigEndian.Uint32(hdr[4:]); {
		case typ == 1:
			return fmt.Errorf("raw: nsqd error after %d of %d OKs: %s", got, want, frame)
		case typ == 0 && string(frame) == "OK":
			got++
		case typ == 0 && string(frame) == "_heartbeat_":
		default:
			return errors.New("raw: unexpected frame: " + string(frame))
		}
	}
	return nil
}
