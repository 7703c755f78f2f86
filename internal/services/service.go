// Package services holds the PaxosService contract (ceph-mon-spec.md 6.1, adapted) and the
// services that live on top of Paxos: the member map (monmap) and the key/value store
// (config-key).
//
// How the shell (internal/monitor) drives a service:
//   - At start and after every commit that the paxos core applied to the store, call
//     Refresh(st) on every service (update_from_paxos).
//   - A write (leader only, Paxos writeable) calls the service's command method, which validates
//     the command against the committed state plus anything it has staged and returns an Update:
//     the StoreOps to add to the next Paxos value (prepare_update + encode_pending in one step)
//     and the reply's one line. An Update without ops means nothing changes: reply at once,
//     propose nothing. The reply of a write with ops goes out after the value commits.
//   - Merge the ops of every staged write (of every service) into one Transaction, Encode it,
//     and Propose the bytes.
//   - Reads (Get, List, Latest, At, ...) read the store; the shell calls them only while Paxos
//     says Readable.
//   - On restart/bootstrap or lost leadership, call Discard() (Ceph's restart(): drop pending).
//
// Errors of commands wrap one of ErrInvalid, ErrNotFound, ErrExists, ErrTooBig (errors.Is
// works); their Error() is the one-line message alone, ready for a gRPC status. GRPCCode maps
// them. Any other error is an internal one (the store failed).
//
// This package keeps no goroutines and reads no clock except through an injected func.
package services

import (
	"errors"
	"fmt"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// Sentinel errors of commands. The shell maps them to gRPC codes (GRPCCode) and monctl to exit
// statuses (EINVAL 22, ENOENT 2, EEXIST 17, EFBIG 27).
var (
	ErrInvalid  = errors.New("invalid argument")
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrTooBig   = errors.New("too big")
)

// cmdError wraps a sentinel but prints only its message: the message is what the user sees, so
// it must not carry a "too big: " prefix the sentinel would add with fmt.Errorf("%w").
type cmdError struct {
	kind error
	msg  string
}

func (e *cmdError) Error() string { return e.msg }
func (e *cmdError) Unwrap() error { return e.kind }

// errorf returns an error that errors.Is kind and reads as the formatted message.
func errorf(kind error, format string, args ...any) error {
	return &cmdError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// GRPCCode maps a command error to its gRPC code: InvalidArgument, NotFound, AlreadyExists,
// ResourceExhausted (too big; EFBIG), Internal for anything else, OK for nil.
func GRPCCode(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrExists):
		return codes.AlreadyExists
	case errors.Is(err, ErrTooBig):
		return codes.ResourceExhausted
	default:
		return codes.Internal
	}
}

// Service is the shape every service shares (spec 6.1 reduced to what the shell calls on all
// services alike; the commands are concrete methods of each service).
type Service interface {
	// Name is the service's bucket in the store (its prefix).
	Name() string
	// Refresh reloads the in-memory state from the store: at start and after every commit.
	Refresh(st kvstore.Store) error
	// Discard drops state staged but not yet committed (bootstrap, lost leadership).
	Discard()
}

var (
	_ Service = (*KV)(nil)
	_ Service = (*Monmap)(nil)
)

// Update is the outcome of a validated write.
type Update struct {
	// Ops go into the next Paxos value. Empty: nothing changes, reply at once.
	Ops []*minimonv1.StoreOp
	// Message is the reply's one line (Ceph's wording).
	Message string
}

// Merge concatenates the ops of staged writes, in order, into one transaction (the Paxos
// value). Later ops win over earlier ones on the same key, as Apply runs them in order.
func Merge(ops ...[]*minimonv1.StoreOp) *minimonv1.Transaction {
	n := 0
	for _, o := range ops {
		n += len(o)
	}
	tx := &minimonv1.Transaction{Ops: make([]*minimonv1.StoreOp, 0, n)}
	for _, o := range ops {
		tx.Ops = append(tx.Ops, o...)
	}
	return tx
}

// Encode encodes a transaction as a Paxos value.
func Encode(tx *minimonv1.Transaction) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(tx)
	if err != nil {
		return nil, fmt.Errorf("services: encode transaction: %w", err)
	}
	return b, nil
}

// Decode decodes a Paxos value.
func Decode(value []byte) (*minimonv1.Transaction, error) {
	tx := &minimonv1.Transaction{}
	if err := proto.Unmarshal(value, tx); err != nil {
		return nil, fmt.Errorf("services: decode transaction: %w", err)
	}
	return tx, nil
}

func put(bucket string, key, value []byte) *minimonv1.StoreOp {
	return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: bucket, Key: key, Value: value}
}

func erase(bucket string, key []byte) *minimonv1.StoreOp {
	return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE, Bucket: bucket, Key: key}
}
