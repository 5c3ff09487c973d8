package main

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nsqio/nsq/nsqlookupd"
)

// startLookupd runs nsqlookupd v1.3.0 inside the test, on free ports.
func startLookupd() (l *nsqlookupd.NSQLookupd, stop func(), err error) {
	opts := nsqlookupd.NewOptions()
	opts.TCPAddress = "127.0.0.1:0"
	opts.HTTPAddress = "127.0.0.1:0"
	opts.BroadcastAddress = "127.0.0.1"
	if err := opts.LogLevel.Set("warn"); err != nil {
		return nil, nil, err
	}
	l, err = nsqlookupd.New(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("starting nsqlookupd: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := l.Main(); err != nil {
			fmt.Fprintln(os.Stderr, "nsqlookupd:", err)
		}
	}()
	return l, func() { l.Exit(); <-done }, nil
}

// waitRegistered waits until n nsqd have registered with l.
func waitRegistered(t *testing.T, l *nsqlookupd.NSQLookupd, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(l.DB.FindProducers("client", "", "")) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d nsqd registered", n)
		}
		time.Sleep(10 * time.Millisecond) // nsqlookupd offers nothing to wait on
	}
}
