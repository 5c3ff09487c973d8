package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/nsqio/nsq/nsqd"
)

// startNsqd runs nsqd v1.3.0 inside this process, listening on free ports
// of 127.0.0.1, with its data in a temporary directory and logging only
// warnings and errors; it registers with the nsqlookupd TCP addresses
// given, as 127.0.0.1. stop shuts it down and removes the directory.
func startNsqd(lookupdTCP ...string) (n *nsqd.NSQD, stop func(), err error) {
	dir, err := os.MkdirTemp("", "quickstart-nsqd-")
	if err != nil {
		return nil, nil, err
	}
	opts := nsqd.NewOptions()
	opts.TCPAddress = "127.0.0.1:0"
	opts.HTTPAddress = "127.0.0.1:0"
	opts.DataPath = dir
	opts.NSQLookupdTCPAddresses = lookupdTCP
	opts.BroadcastAddress = "127.0.0.1"
	if err := opts.LogLevel.Set("warn"); err != nil {
		return nil, nil, err
	}
	n, err = nsqd.New(opts)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("starting nsqd: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.Main(); err != nil {
			fmt.Fprintln(os.Stderr, "nsqd:", err)
		}
	}()
	stop = func() {
		waitClientsGone(n)
		n.Exit()
		<-done
		os.RemoveAll(dir)
	}
	return n, stop, nil
}

// waitClientsGone gives nsqd up to a second to notice that the publishing
// connections have closed (the caller stopped its producer first). nsqd
// exposes no signal for that, so this looks every few milliseconds. An nsqd
// made to exit while it still reads a connection logs "use of closed network
// connection" for it, an error that is nsqd's own shutdown, not a failure.
func waitClientsGone(n *nsqd.NSQD) {
	deadline := time.Now().Add(time.Second)
	for len(n.GetStats("", "", true).Producers) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// embeddedCount returns how many messages the embedded nsqd has received
// on topic.
func embeddedCount(n *nsqd.NSQD, topic string) uint64 {
	for _, t := range n.GetStats(topic, "", false).Topics {
		if t.TopicName == topic {
			return t.MessageCount
		}
	}
	return 0
}

// httpCount asks nsqd's HTTP API (GET /stats) how many messages it has
// received on topic.
func httpCount(ctx context.Context, httpAddr, topic string) (uint64, error) {
	q := url.Values{"format": {"json"}, "topic": {topic}, "include_clients": {"false"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/stats?"+q.Encode(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("nsqd stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("nsqd stats: %s", resp.Status)
	}
	var stats struct {
		Topics []struct {
			Name         string `json:"topic_name"`
			MessageCount uint64 `json:"message_count"`
		} `json:"topics"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		return 0, fmt.Errorf("nsqd stats: %w", err)
	}
	for _, t := range stats.Topics {
		if t.Name == topic {
			return t.MessageCount, nil
		}
	}
	return 0, nil
}
