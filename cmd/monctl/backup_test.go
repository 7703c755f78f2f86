package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/client/clienttest"
)

func TestBackup(t *testing.T) {
	s := clienttest.New()
	s.BackupData = bytes.Repeat([]byte("store page "), 5000)
	s.BackupChunk = 4096
	addr := s.Start(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "mon-a.db")

	r := monctl(t, addr, "backup", "--out", file)
	want := "backup of mon.a at version 1: 55000 bytes -> " + file + "\n"
	if r.code != 0 || r.out != want {
		t.Fatalf("backup: %+v, want out %q", r, want)
	}
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, s.BackupData) {
		t.Fatalf("file: %d bytes, err %v; want the %d bytes sent", len(got), err, len(s.BackupData))
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("FILE.tmp left behind: %v", err)
	}

	r = monctl(t, addr, "-f", "json", "backup", "-o", file)
	var rep map[string]any
	if err := json.Unmarshal([]byte(r.out), &rep); err != nil || r.code != 0 {
		t.Fatalf("json: %+v: %v", r, err)
	}
	if rep["file"] != file || rep["bytes"] != 55000.0 || rep["last_committed"] != 1.0 || rep["mon"] != "a" || len(rep) != 4 {
		t.Fatalf("json fields: %v", rep)
	}
}

func TestBackupFailureKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mon.db")
	if err := os.WriteFile(file, []byte("previous backup"), 0o600); err != nil {
		t.Fatal(err)
	}
	broken := clienttest.New()
	broken.BackupFunc = func(_ *minimonv1.BackupRequest, s grpc.ServerStreamingServer[minimonv1.BackupChunk]) error {
		_ = s.Send(&minimonv1.BackupChunk{Data: []byte("half"), TotalBytes: 8, Name: "a"})
		return status.Error(codes.Internal, "disk error")
	}
	busy := clienttest.New()
	busy.Intercept = func(string, proto.Message) error {
		return status.Error(codes.ResourceExhausted, "a backup is already running")
	}
	for _, tc := range []struct {
		name, addr, msg string
	}{
		{"broken stream", broken.Start(t), "disk error"},
		{"busy", busy.Start(t), "a backup is already running"},
	} {
		r := monctl(t, tc.addr, "backup", "--out", file)
		if r.code != 1 || !strings.Contains(r.errOut, tc.msg) {
			t.Errorf("%s: %+v, want exit 1 saying %q", tc.name, r, tc.msg)
		}
		if got, _ := os.ReadFile(file); string(got) != "previous backup" {
			t.Errorf("%s: FILE replaced by %q", tc.name, got)
		}
		if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
			t.Errorf("%s: FILE.tmp left behind: %v", tc.name, err)
		}
	}
	if r := monctl(t, broken.Start(t), "backup"); r.code != 22 {
		t.Errorf("without --out: %+v", r)
	}
}
