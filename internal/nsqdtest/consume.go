package nsqdtest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// ConsumeChannel is the channel Consume subscribes to. It is a durable
// channel: messages published to a topic before its first channel exists are
// kept in the topic and delivered to that first channel, and messages left
// over by one Consume call are delivered to the next one.
const ConsumeChannel = "nsqdtest"

// maxRdy is nsqd's default --max-rdy-count.
const maxRdy = 2500

// NSQ V2 frame types.
const (
	frameTypeResponse = 0
	frameTypeError    = 1
	frameTypeMessage  = 2
)

// Message is a message received by Consume.
type Message struct {
	// Body is the message body.
	Body []byte
	// Timestamp is when nsqd received the message.
	Timestamp time.Time
	// Attempts is the number of delivery attempts, starting at 1.
	Attempts uint16
	// ID is the message ID (16 ASCII hex digits).
	ID [16]byte
}

// Consume subscribes to topic on channel ConsumeChannel with a minimal
// raw-protocol V2 client, receives and FINishes exactly count messages, and
// returns them in the order nsqd delivered them. It answers heartbeats, and
// keeps the RDY count at min(remaining, 2500) so that no more than count
// messages are taken from the channel. Before returning it sends CLS and
// waits for CLOSE_WAIT, so all FINs have been processed by nsqd. A count
// <= 0 returns nil at once.
//
// Consume calls t.Fatal if fewer than count messages arrive within timeout,
// or on any protocol error, so it must be called from the test goroutine.
// It does not support TLS, compression or auth.
func (n *Nsqd) Consume(t testing.TB, topic string, count int, timeout time.Duration) []Message {
	t.Helper()
	if count <= 0 {
		return nil
	}
	deadline := time.Now().Add(timeout)
	conn, err := net.DialTimeout("tcp", n.TCPAddr(), timeout)
	if err != nil {
		t.Fatalf("nsqdtest: Consume: %v", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		t.Fatalf("nsqdtest: Consume: %v", err)
	}
	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)
	send := func(cmds ...string) {
		t.Helper()
		for _, c := range cmds {
			w.WriteString(c)
		}
		if err := w.Flush(); err != nil {
			t.Fatalf("nsqdtest: Consume: writing %q: %v", cmds, err)
		}
	}

	send("  V2", "SUB "+topic+" "+ConsumeChannel+"\n")
	typ, data, err := readFrame(r)
	if err != nil {
		t.Fatalf("nsqdtest: Consume: SUB: %v", err)
	}
	if typ != frameTypeResponse || string(data) != "OK" {
		t.Fatalf("nsqdtest: Consume: SUB %s %s: frame type %d: %s", topic, ConsumeChannel, typ, data)
	}

	rdy := min(count, maxRdy)
	send("RDY " + strconv.Itoa(rdy) + "\n")

	msgs := make([]Message, 0, count)
	for len(msgs) < count {
		typ, data, err := readFrame(r)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("nsqdtest: Consume: timed out after %v: got %d of %d messages on %s", timeout, len(msgs), count, topic)
			}
			t.Fatalf("nsqdtest: Consume: got %d of %d messages on %s: %v", len(msgs), count, topic, err)
		}
		switch typ {
		case frameTypeResponse:
			if string(data) == "_heartbeat_" {
				send("NOP\n")
			}
		case frameTypeError:
			t.Fatalf("nsqdtest: Consume: got %d of %d messages on %s: error frame: %s", len(msgs), count, topic, data)
		case frameTypeMessage:
			m, err := parseMessage(data)
			if err != nil {
				t.Fatalf("nsqdtest: Consume: %v", err)
			}
			msgs = append(msgs, m)
			// Lower RDY before the FIN frees an in-flight slot, so that
			// at most count messages are ever delivered to us.
			if remaining := count - len(msgs); remaining < rdy {
				rdy = remaining
				send("RDY "+strconv.Itoa(rdy)+"\n", "FIN "+string(m.ID[:])+"\n")
			} else {
				send("FIN " + string(m.ID[:]) + "\n")
			}
		default:
			t.Fatalf("nsqdtest: Consume: unknown frame type %d", typ)
		}
	}

	send("CLS\n")
	for {
		typ, data, err := readFrame(r)
		if err != nil {
			t.Fatalf("nsqdtest: Consume: waiting for CLOSE_WAIT: %v", err)
		}
		if typ == frameTypeError {
			t.Fatalf("nsqdtest: Consume: error frame: %s", data)
		}
		if typ == frameTypeResponse && string(data) == "CLOSE_WAIT" {
			return msgs
		}
		if typ == frameTypeResponse && string(data) == "_heartbeat_" {
			send("NOP\n")
		}
	}
}

// readFrame reads one V2 frame: a 4-byte big-endian size, then a 4-byte
// big-endian frame type and size-4 bytes of data.
func readFrame(r io.Reader) (typ int32, data []byte, err error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return 0, nil, err
	}
	size := binary.BigEndian.Uint32(hdr[:4])
	if size < 4 || size > 64<<20 {
		return 0, nil, fmt.Errorf("invalid frame size %d", size)
	}
	if _, err := io.ReadFull(r, hdr[4:]); err != nil {
		return 0, nil, err
	}
	data = make([]byte, size-4)
	if _, err := io.ReadFull(r, data); err != nil {
		return 0, nil, err
	}
	return int32(binary.BigEndian.Uint32(hdr[4:])), data, nil
}

// parseMessage decodes a message frame: an 8-byte timestamp (nanoseconds),
// 2-byte attempts, 16-byte ID, then the body.
func parseMessage(data []byte) (Message, error) {
	const hdrLen = 8 + 2 + 16
	if len(data) < hdrLen {
		return Message{}, fmt.Errorf("short message frame (%d bytes)", len(data))
	}
	var m Message
	m.Timestamp = time.Unix(0, int64(binary.BigEndian.Uint64(data[:8])))
	m.Attempts = binary.BigEndian.Uint16(data[8:10])
	copy(m.ID[:], data[10:26])
	m.Body = bytes.Clone(data[hdrLen:])
	return m, nil
}
