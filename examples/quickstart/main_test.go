package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nsqkit/go-nsq"
)

// published is what run prints about its publishes, whatever the nsqd.
const published = `Publish: 1 message stored
PublishAsync: 10 messages stored, results in order [0 1 2 3 4 5 6 7 8 9]
MultiPublish: 5 messages stored at once
DeferredPublish: 1 message stored, for delivery in 2s
refused: nsq: invalid topic name "bad topic": want 1 to 64 characters of [.a-zA-Z0-9_-], optionally followed by #ephemeral
producer: 17 messages published, 1 refused
`

func runOK(t *testing.T, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, addr, &out); err != nil {
		t.Fatalf("run: %v\noutput:\n%s", err, out.String())
	}
	return out.String()
}

func TestRunEmbedded(t *testing.T) {
	out := runOK(t, "")
	first, rest, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(first, "nsqd: running inside this program at 127.0.0.1:") {
		t.Errorf("first line = %q", first)
	}
	want := published + `nsqd: 17 messages received on topic "quickstart"` + "\n"
	if rest != want {
		t.Errorf("output after the first line:\n%s\nwant:\n%s", rest, want)
	}
}

func TestRunExternal(t *testing.T) {
	n, stop, err := startNsqd()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	addr := n.RealTCPAddr().String()

	want := published + "nsqd: give -nsqd-http to compare with nsqd's own count\n"
	if out := runOK(t, addr); out != want {
		t.Errorf("-nsqd output:\n%s\nwant:\n%s", out, want)
	}

	// nsqd has 17 messages from the first run: only the new ones count.
	defer func(old string) { *nsqdHTTP = old }(*nsqdHTTP)
	*nsqdHTTP = n.RealHTTPAddr().String()
	want = published + `nsqd: 17 messages received on topic "quickstart"` + "\n"
	if out := runOK(t, addr); out != want {
		t.Errorf("-nsqd -nsqd-http output:\n%s\nwant:\n%s", out, want)
	}
	if got := embeddedCount(n, topic); got != 34 {
		t.Errorf("nsqd has %d messages, want 34", got)
	}
}

func TestRunUnreachable(t *testing.T) {
	// An address nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	var out bytes.Buffer
	err = run(context.Background(), addr, &out)
	if !errors.Is(err, nsq.ErrNotConnected) || !strings.HasPrefix(err.Error(), "Publish: ") {
		t.Fatalf("run = %v, want the Publish error, an ErrNotConnected", err)
	}
	if out.Len() != 0 {
		t.Errorf("output:\n%s", out.String())
	}
}
