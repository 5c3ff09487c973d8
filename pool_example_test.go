package nsq_test

import (
	"context"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/nsqkit/go-nsq"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
)

// The pool examples publish to three nsqd registered with one nsqlookupd,
// started on first use and killed by the kernel when the test binary exits.
var cluster struct {
	once    sync.Once
	nsqd    []string
	lookupd string
	err     error
}

func startCluster() {
	cluster.once.Do(func() {
		l, err := nsqdtest.LaunchLookupd()
		if err != nil {
			cluster.err = err
			return
		}
		cluster.lookupd = l.HTTPAddr()
		for range 3 {
			n, err := nsqdtest.Launch("--lookupd-tcp-address="+l.TCPAddr(), "--broadcast-address=127.0.0.1")
			if err != nil {
				cluster.err = err
				return
			}
			cluster.nsqd = append(cluster.nsqd, n.TCPAddr())
		}
	})
	if cluster.err != nil {
		panic(cluster.err)
	}
}

// nsqdAddrs returns the TCP addresses of the examples' nsqd: in real code,
// yours, such as []string{"10.0.0.1:4150", "10.0.0.2:4150"}.
func nsqdAddrs() []string {
	startCluster()
	return cluster.nsqd
}

// lookupdAddr returns the HTTP address of the examples' nsqlookupd: in real
// code, yours, such as "10.0.0.9:4161".
func lookupdAddr() string {
	startCluster()
	return cluster.lookupd
}

// A pool over a static list of nsqd: the stream spreads over them, and a
// publish that never reached a node goes to another.
func ExampleNewProducerPool() {
	pool, err := nsq.NewProducerPool(nsqdAddrs(), nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Stop()

	done := make(chan *nsq.ProducerTransaction, 100)
	for i := range 100 {
		if err := pool.PublishAsync("clicks", fmt.Appendf(nil, "click %d", i), done, i); err != nil {
			log.Fatal(err)
		}
	}
	ok := 0
	for range 100 {
		// Results come back once each, in the order each node answered.
		if t := <-done; t.Error == nil {
			ok++
		}
	}
	fmt.Println("stored:", ok)
	// Output: stored: 100
}

// A pool that learns its nodes from nsqlookupd, and follows them as they
// come and go.
func ExampleProducerPool_ConnectToNSQLookupd() {
	cfg := nsq.NewConfig()
	cfg.LookupdPollInterval = 15 * time.Second
	pool, err := nsq.NewProducerPool(nil, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Stop()
	if err := pool.ConnectToNSQLookupd(lookupdAddr()); err != nil {
		log.Fatal(err)
	}

	// The first publish waits for nsqlookupd's first answer.
	err = pool.Publish("signups", []byte(`{"user": 42}`))
	fmt.Println("error:", err)
	// Output: error: <nil>
}

// Code written against Publisher takes a Producer or a ProducerPool.
func ExamplePublisher() {
	announce := func(p nsq.Publisher, text string) error {
		if err := p.Publish("announcements", []byte(text)); err != nil {
			return err
		}
		return p.Flush(context.Background())
	}

	producer, err := nsq.NewProducer(nsqdAddrs()[0], nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()
	pool, err := nsq.NewProducerPool(nsqdAddrs(), nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Stop()

	fmt.Println(announce(producer, "to one nsqd"))
	fmt.Println(announce(pool, "to any of three"))
	// Output:
	// <nil>
	// <nil>
}
