package monitor

import (
	"context"
	"net"
	"runtime"
	"testing"
)

// recordingListener remembers the remote address of every accepted connection.
type recordingListener struct {
	net.Listener
	remotes chan net.Addr
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.remotes <- c.RemoteAddr():
		default:
		}
	}
	return c, err
}

func needLoopback8(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("needs the whole 127/8 on loopback (Linux)")
	}
}

func TestSourceDialerBindsOwnIP(t *testing.T) {
	needLoopback8(t)
	lis := listen(t)
	defer lis.Close()
	accepted := make(chan net.Addr, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		accepted <- c.RemoteAddr()
		_ = c.Close()
	}()
	d := sourceDialer("127.0.0.2:6789")
	if d == nil {
		t.Fatal("no dialer for a specific IP")
	}
	c, err := d(context.Background(), lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Errorf("local address %s, want 127.0.0.2", got)
	}
	if got := (<-accepted).(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Errorf("server saw the connection from %s, want 127.0.0.2", got)
	}
}

func TestSourceDialerKeepsKernelChoice(t *testing.T) {
	for _, own := range []string{"0.0.0.0:6789", "[::]:6789", ":6789", "mon-a:6789", "garbage"} {
		if sourceDialer(own) != nil {
			t.Errorf("%q: got a source-binding dialer, want none", own)
		}
		if len(peerDialOptions(own)) != 0 {
			t.Errorf("%q: got dial options, want none", own)
		}
	}
	for _, c := range []struct {
		src, dst string
		want     bool
	}{
		{"127.0.0.2", "127.0.0.3", true},
		{"10.0.0.1", "10.0.0.2", true},
		{"127.0.0.2", "10.0.0.2", false}, // loopback source cannot leave the host
		{"10.0.0.1", "127.0.0.1", false},
		{"127.0.0.2", "::1", false}, // family
	} {
		if got := sameScope(net.ParseIP(c.src), net.ParseIP(c.dst)); got != c.want {
			t.Errorf("sameScope(%s, %s) = %v, want %v", c.src, c.dst, got, c.want)
		}
	}
}

// TestTransportDialsFromOwnAddr: a transport built the way monitor.New builds it reaches its
// peer from the IP of its own --addr.
func TestTransportDialsFromOwnAddr(t *testing.T) {
	needLoopback8(t)
	rl := &recordingListener{Listener: listen(t), remotes: make(chan net.Addr, 16)}
	b := newTransport(t, TransportConfig{Name: "b", Rank: 1})
	serve(t, rl, b)
	a := newTransport(t, TransportConfig{Name: "a", Rank: 0, Peers: map[int32]string{1: rl.Addr().String()},
		DialOptions: peerDialOptions("127.0.0.3:6789")})
	a.Send(1, probe(1))
	recvN(t, b.Inbox(), 1)
	if got := (<-rl.remotes).(*net.TCPAddr).IP.String(); got != "127.0.0.3" {
		t.Errorf("peer saw the connection from %s, want 127.0.0.3", got)
	}
}
