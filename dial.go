package nsq

import (
	"context"
	"net"
)

// dialContext opens the connection a Conn's handshake starts with. Tests
// replace it, before any Conn exists, with one that also reaches in-memory
// fake servers (which run on virtual time under testing/synctest).
var dialContext = func(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
	return d.DialContext(ctx, "tcp", addr)
}
