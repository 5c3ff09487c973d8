package nsq

import (
	"os"
	"sync"

	"github.com/nsqkit/go-nsq/internal/nsqdtest"
)

// exampleAddr is the address the examples (example_test.go) publish to:
// nsqd's default TCP address, as a user writes it.
const exampleAddr = "127.0.0.1:4150"

// The examples' nsqd, started the first time a Conn dials exampleAddr.
// Nothing stops it: the kernel kills it when the test binary exits
// (nsqdtest sets Pdeathsig on Linux).
var examplesNsqd struct {
	once sync.Once
	addr string
}

// exampleDialAddr points exampleAddr at the examples' own nsqd, on a free
// port, so that the examples need nothing listening on 4150 and test
// binaries running at the same time do not share one nsqd. The tests'
// dialContext (TestMain) calls it for every address.
func exampleDialAddr(addr string) string {
	if addr != exampleAddr {
		return addr
	}
	examplesNsqd.once.Do(func() {
		dir, err := os.MkdirTemp("", "nsq-examples-")
		if err != nil {
			panic("examples' nsqd: " + err.Error())
		}
		n, err := nsqdtest.Launch("--data-path=" + dir)
		// Remove its data path now, so nothing is left behind when the
		// kernel kills it: what the examples publish stays in nsqd's
		// memory, and nsqd only logs its failures to save metadata.
		os.RemoveAll(dir)
		if err != nil {
			panic("examples' nsqd: " + err.Error())
		}
		examplesNsqd.addr = n.TCPAddr()
	})
	return examplesNsqd.addr
}
