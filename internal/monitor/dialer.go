package monitor

import (
	"context"
	"net"

	"google.golang.org/grpc"
)

// peerDialOptions makes connections to other monitors leave from the IP of own (--addr) when
// it names one. Peers then see a monitor's traffic coming from its own address, so a link
// between two monitors is the pair of their addresses; the fault tests (test/robustness)
// cut such links with nftables rules on (saddr, daddr). A wildcard or host-name --addr, or a
// destination the own IP cannot reach (another family; loopback versus not), keeps the
// kernel's choice.
func peerDialOptions(own string) []grpc.DialOption {
	if d := sourceDialer(own); d != nil {
		return []grpc.DialOption{grpc.WithContextDialer(d)}
	}
	return nil
}

// sourceDialer returns the dial function of peerDialOptions, or nil when own names no
// specific IP.
func sourceDialer(own string) func(context.Context, string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(own)
	if err != nil {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		return nil
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		if h, _, err := net.SplitHostPort(addr); err == nil {
			if dst := net.ParseIP(h); dst != nil && sameScope(ip, dst) {
				d.LocalAddr = &net.TCPAddr{IP: ip}
			}
		}
		return d.DialContext(ctx, "tcp", addr)
	}
}

// sameScope reports whether a socket bound to src can reach dst: same family, and both
// loopback or both not (the kernel drops loopback sources on other interfaces).
func sameScope(src, dst net.IP) bool {
	return (src.To4() != nil) == (dst.To4() != nil) && src.IsLoopback() == dst.IsLoopback()
}
