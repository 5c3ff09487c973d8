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
PublishAsync: 10 messages stored, results for [0 1 2 3 4 5 6 7 8 9]
MultiPublish: 5 messages stored at once
DeferredPublish: 1 message stored, for delivery in 2s
refused: nsq: invalid topic name "bad topic": want 1 to 64 characters of [.a-zA-Z0-9_-], optionally followed by #ephemeral
`

const (
	producerStats = "producer: 17 messages published, 1 refused\n"
	noCount       = "nsqd: give -nsqd-http (with one -nsqd) to compare with nsqd's own count\n"
)

func runOK(t *testing.T, o options) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, o, &out); err != nil {
		t.Fatalf("run: %v\noutput:\n%s", err, out.String())
	}
	return out.String()
}

func TestRunEmbedded(t *testing.T) {
	out := runOK(t, options{})
	first, rest, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(first, "nsqd: running inside this program at 127.0.0.1:") {
		t.Errorf("first line = %q", first)
	}
	want := published + producerStats + `nsqd: 17 messages received on topic "quickstart"` + "\n"
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

	want := published + producerStats + noCount
	if out := runOK(t, options{nsqd: []string{addr}}); out != want {
		t.Errorf("-nsqd output:\n%s\nwant:\n%s", out, want)
	}

	// nsqd has 17 messages from the first run: only the new ones count.
	o := options{nsqd: []string{addr}, nsqdHTTP: n.RealHTTPAddr().String()}
	want = published + producerStats + `nsqd: 17 messages received on topic "quickstart"` + "\n"
	if out := runOK(t, o); out != want {
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
	err = run(context.Background(), options{nsqd: []string{addr}}, &out)
	if !errors.Is(err, nsq.ErrNotConnected) || !strings.HasPrefix(err.Error(), "Publish: ") {
		t.Fatalf("run = %v, want the Publish error, an ErrNotConnected", err)
	}
	if out.Len() != 0 {
		t.Errorf("output:\n%s", out.String())
	}
}

// TestRunPool: two -nsqd publish with a ProducerPool, over both.
func TestRunPool(t *testing.T) {
	var addrs []string
	var counts []func() uint64
	for range 2 {
		n, stop, err := startNsqd()
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		addrs = append(addrs, n.RealTCPAddr().String())
		counts = append(counts, func() uint64 { return embeddedCount(n, topic) })
	}
	out := runOK(t, options{nsqd: addrs})
	checkPoolOutput(t, out, addrs, counts)
}

// TestRunLookupd: -lookupd publishes with a ProducerPool to every nsqd the
// nsqlookupd lists.
func TestRunLookupd(t *testing.T) {
	l, stopLookupd, err := startLookupd()
	if err != nil {
		t.Fatal(err)
	}
	defer stopLookupd()
	var addrs []string
	var counts []func() uint64
	for range 2 {
		n, stop, err := startNsqd(l.RealTCPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		addrs = append(addrs, n.RealTCPAddr().String())
		counts = append(counts, func() uint64 { return embeddedCount(n, topic) })
	}
	waitRegistered(t, l, len(addrs))
	out := runOK(t, options{lookupd: l.RealHTTPAddr().String()})
	checkPoolOutput(t, out, addrs, counts)
}

func checkPoolOutput(t *testing.T, out string, addrs []string, counts []func() uint64) {
	t.Helper()
	if !strings.HasPrefix(out, published+"pool: 17 messages published, 1 refused; per nsqd:") || !strings.HasSuffix(out, noCount) {
		t.Errorf("output:\n%s", out)
	}
	var total uint64
	for i, count := range counts {
		if !strings.Contains(out, " "+addrs[i]+" ") {
			t.Errorf("output does not name %s:\n%s", addrs[i], out)
		}
		total += count()
	}
	if total != 17 {
		t.Errorf("the nsqd hold %d messages, want 17", total)
	}
}
