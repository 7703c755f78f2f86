package client

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/client/clienttest"
)

func TestBackupHuntsThenCopies(t *testing.T) {
	down := clienttest.New()
	down.Intercept = unavailable
	up := clienttest.New()
	up.BackupData = bytes.Repeat([]byte("0123456789"), 1000)
	up.BackupChunk = 777
	c := newClient(t, deadAddr(t), down.Start(t), up.Start(t))
	var buf bytes.Buffer
	info, err := c.Backup(ctxT(t, 10*time.Second), "", &buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), up.BackupData) || info.Bytes != int64(len(up.BackupData)) || info.Name != "a" || info.LastCommitted != 1 {
		t.Fatalf("info %+v, %d bytes written, want %d", info, buf.Len(), len(up.BackupData))
	}
	if count(down, "Backup") != 1 || count(up, "Backup") != 1 {
		t.Fatalf("calls: down %d up %d", count(down, "Backup"), count(up, "Backup"))
	}
}

func TestBackupNotRetriedOnceWritten(t *testing.T) {
	tests := []struct {
		name string
		fn   func(*minimonv1.BackupRequest, grpc.ServerStreamingServer[minimonv1.BackupChunk]) error
		want string
	}{
		{"broken", func(_ *minimonv1.BackupRequest, s grpc.ServerStreamingServer[minimonv1.BackupChunk]) error {
			_ = s.Send(&minimonv1.BackupChunk{Data: []byte("abc"), TotalBytes: 10, Name: "b"})
			return status.Error(codes.Unavailable, "shutting down")
		}, "shutting down"},
		{"short", func(_ *minimonv1.BackupRequest, s grpc.ServerStreamingServer[minimonv1.BackupChunk]) error {
			return s.Send(&minimonv1.BackupChunk{Data: []byte("abc"), TotalBytes: 10, Name: "b"})
		}, "ended early"},
		{"long", func(_ *minimonv1.BackupRequest, s grpc.ServerStreamingServer[minimonv1.BackupChunk]) error {
			_ = s.Send(&minimonv1.BackupChunk{Data: []byte("abc"), TotalBytes: 4, Name: "b"})
			return s.Send(&minimonv1.BackupChunk{Data: []byte("def")})
		}, "more data than announced"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad, good := clienttest.New(), clienttest.New()
			bad.BackupFunc = tc.fn
			c := newClient(t, bad.Start(t), good.Start(t))
			var buf bytes.Buffer
			info, err := c.Backup(ctxT(t, 10*time.Second), "", &buf)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "mon.b") {
				t.Fatalf("err %v, want one saying %q", err, tc.want)
			}
			if info.Bytes != int64(buf.Len()) || buf.String() != "abc" {
				t.Fatalf("info %+v, buffer %q", info, buf.String())
			}
			if count(bad, "Backup") != 1 || count(good, "Backup") != 0 {
				t.Fatalf("retried after writing: bad %d good %d", count(bad, "Backup"), count(good, "Backup"))
			}
		})
	}
}

func TestBackupAlreadyRunningIsFinal(t *testing.T) {
	busy, other := clienttest.New(), clienttest.New()
	busy.Intercept = func(string, proto.Message) error {
		return status.Error(codes.ResourceExhausted, "a backup is already running")
	}
	c := newClient(t, busy.Start(t), other.Start(t))
	_, err := c.Backup(ctxT(t, 10*time.Second), "", &bytes.Buffer{})
	if status.Code(err) != codes.ResourceExhausted || count(other, "Backup") != 0 {
		t.Fatalf("err %v; other monitor got %d calls", err, count(other, "Backup"))
	}
	// Asked of one endpoint, the others are never tried.
	_, err = c.Backup(ctxT(t, 200*time.Millisecond), deadAddr(t), &bytes.Buffer{})
	if !errors.Is(err, ErrTimeout) || count(other, "Backup") != 0 {
		t.Fatalf("dead endpoint: %v", err)
	}
}
