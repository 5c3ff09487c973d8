package fakensqd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// ErrMalformed is wrapped by the errors for bytes that cannot be a command:
// an empty line, a body size over the fake's limit, an MPUB body whose
// message sizes do not add up. After it the stream cannot be resynchronized.
var ErrMalformed = errors.New("malformed command")

const (
	// maxLineLen bounds a command line; more bytes without a newline are
	// malformed (a client speaking some other protocol, or garbage).
	maxLineLen = 64 << 10
	// maxBodySize bounds a body, so that a garbage size cannot make the
	// fake allocate gigabytes. It is far above nsqd's default limits.
	maxBodySize = 64 << 20
)

// Command is one command read from a client.
//
// Body, Messages and Raw share one allocation that belongs to the caller.
type Command struct {
	// Name is the first word of the command line: "PUB", "NOP", ...
	Name string
	// Params are the words after Name, split on single spaces as nsqd
	// does (two spaces give an empty param); nil when there are none.
	Params []string
	// Body is the bytes after the 4-byte body size, for the commands that
	// carry one (IDENTIFY, AUTH, PUB, DPUB, MPUB); nil for the others. For
	// MPUB it is the whole body: the 4-byte count and the sized messages.
	Body []byte
	// Messages are the MPUB messages, decoded from Body; nil for other
	// commands.
	Messages [][]byte
	// Raw is the exact bytes read for the command: line, newline, body
	// size and body.
	Raw []byte
}

// String describes the command for failure messages, for example
// `PUB topic [5 bytes "hello"]` or `MPUB topic [3 messages, 27 bytes]`.
func (c Command) String() string {
	var b strings.Builder
	b.WriteString(c.Name)
	for _, p := range c.Params {
		b.WriteByte(' ')
		b.WriteString(p)
	}
	switch {
	case c.Name == "MPUB" && c.Body != nil:
		fmt.Fprintf(&b, " [%d messages, %d bytes]", len(c.Messages), len(c.Body))
	case c.Body != nil:
		fmt.Fprintf(&b, " [%d bytes %s]", len(c.Body), preview(c.Body))
	}
	return b.String()
}

// hasBody reports whether the command named name carries a sized body.
func hasBody(name string) bool {
	switch name {
	case "IDENTIFY", "AUTH", "PUB", "DPUB", "MPUB":
		return true
	}
	return false
}

// parseCommand parses the command at the start of b. It returns n == 0 and
// a nil error when b holds only part of a command, and an error wrapping
// ErrMalformed when b cannot start with a command. The returned Command
// does not alias b.
func parseCommand(b []byte) (cmd Command, n int, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		if len(b) > maxLineLen {
			return Command{}, 0, fmt.Errorf("%w: no newline in the first %d bytes %s", ErrMalformed, len(b), preview(b))
		}
		return Command{}, 0, nil
	}
	line := bytes.TrimSuffix(b[:i], []byte{'\r'}) // nsqd accepts "\r\n" too
	if len(line) == 0 {
		return Command{}, 0, fmt.Errorf("%w: empty command line", ErrMalformed)
	}
	n = i + 1
	fields := strings.Split(string(line), " ")
	cmd.Name = fields[0]
	if len(fields) > 1 {
		cmd.Params = fields[1:]
	}
	if !hasBody(cmd.Name) {
		cmd.Raw = bytes.Clone(b[:n])
		return cmd, n, nil
	}
	if len(b) < n+4 {
		return Command{}, 0, nil
	}
	size := binary.BigEndian.Uint32(b[n:])
	if size > maxBodySize {
		return Command{}, 0, fmt.Errorf("%w: %s body size %d (bytes %s) is over the fake's %d-byte limit",
			ErrMalformed, cmd.Name, size, preview(b[n:n+4]), maxBodySize)
	}
	end := n + 4 + int(size)
	if len(b) < end {
		return Command{}, 0, nil
	}
	cmd.Raw = bytes.Clone(b[:end])
	cmd.Body = cmd.Raw[n+4 : end : end]
	if cmd.Name == "MPUB" {
		if cmd.Messages, err = splitMPUB(cmd.Body); err != nil {
			return Command{}, 0, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	return cmd, end, nil
}

// splitMPUB decodes an MPUB body: [4-byte count]([4-byte size][message])*.
// The messages alias body.
func splitMPUB(body []byte) ([][]byte, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("MPUB body of %d bytes has no message count", len(body))
	}
	count := binary.BigEndian.Uint32(body)
	rest := body[4:]
	if uint64(count)*4 > uint64(len(rest)) {
		return nil, fmt.Errorf("MPUB count %d cannot fit in the %d bytes after it", count, len(rest))
	}
	msgs := make([][]byte, 0, count)
	for i := range int(count) {
		if len(rest) < 4 {
			return nil, fmt.Errorf("MPUB message %d of %d: %d bytes left, want a 4-byte size", i, count, len(rest))
		}
		size := binary.BigEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(size) > uint64(len(rest)) {
			return nil, fmt.Errorf("MPUB message %d of %d: size %d but %d bytes left", i, count, size, len(rest))
		}
		msgs = append(msgs, rest[:size:size])
		rest = rest[size:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("MPUB body has %d bytes after its %d messages", len(rest), count)
	}
	return msgs, nil
}

// preview quotes at most 48 bytes of b for failure messages.
func preview(b []byte) string {
	const limit = 48
	if len(b) > limit {
		return fmt.Sprintf("%q...", b[:limit])
	}
	return fmt.Sprintf("%q", b)
}
