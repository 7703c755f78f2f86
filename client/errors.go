package client

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors. Every error a Client returns for a failed call wraps one of these when the
// failure has a meaning callers act on (monctl maps them to exit codes), so test with
// errors.Is. The gRPC status stays reachable with status.FromError / status.Code.
var (
	ErrNotFound = errors.New("not found")           // codes.NotFound
	ErrInvalid  = errors.New("invalid argument")    // codes.InvalidArgument, codes.OutOfRange
	ErrExists   = errors.New("already exists")      // codes.AlreadyExists
	ErrTooBig   = errors.New("value too large")     // codes.ResourceExhausted
	ErrNoQuorum = errors.New("no quorum")           // codes.Unavailable (monitor not in a quorum or not ready)
	ErrTimeout  = errors.New("timed out")           // codes.DeadlineExceeded, or the caller's deadline passed while hunting
	ErrFailed   = errors.New("failed precondition") // codes.FailedPrecondition
	ErrClosed   = errors.New("client: closed")
)

// Sentinel returns the sentinel error for a gRPC status code, or nil when the code has none.
func Sentinel(c codes.Code) error {
	switch c {
	case codes.NotFound:
		return ErrNotFound
	case codes.InvalidArgument, codes.OutOfRange:
		return ErrInvalid
	case codes.AlreadyExists:
		return ErrExists
	case codes.ResourceExhausted:
		return ErrTooBig
	case codes.Unavailable:
		return ErrNoQuorum
	case codes.DeadlineExceeded:
		return ErrTimeout
	case codes.FailedPrecondition:
		return ErrFailed
	}
	return nil
}

// Error is a failed call as the monitor (or gRPC) reported it.
type Error struct {
	Code     codes.Code
	Message  string
	Endpoint string // the monitor that answered, "" when unknown
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code.String()
	}
	return e.Message
}

// Unwrap gives the sentinel for the code, so errors.Is(err, ErrNotFound) works.
func (e *Error) Unwrap() error { return Sentinel(e.Code) }

// GRPCStatus keeps status.FromError and status.Code working on client errors.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// FromGRPCError converts an error returned by a generated minimonv1 stub into an *Error whose
// Unwrap gives the sentinel for its code. nil stays nil; context errors and errors that carry
// no gRPC status are returned unchanged.
func FromGRPCError(err error) error {
	if err == nil {
		return nil
	}
	var ce *Error
	if errors.As(err, &ce) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &Error{Code: st.Code(), Message: st.Message()}
}

// retryable reports whether a call that failed with code c may be sent again, to this monitor
// or another. For writes this is exactly the set where resending with the SAME WriteID is
// safe and needed: Unavailable (the monitor has no quorum, is not ready, or the connection
// broke) and DeadlineExceeded/Aborted (the monitor gave up waiting, e.g. across an election)
// leave the outcome unknown or say the write was never proposed; the server deduplicates by
// WriteID, so a write that did commit is answered from its record, not applied twice. Every
// other code (InvalidArgument, NotFound, AlreadyExists, ResourceExhausted,
// FailedPrecondition, ...) is a definite answer and final.
func retryable(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

// unreachableError says the client could not get a connection to an endpoint (never sent).
type unreachableError struct {
	endpoint string
	err      error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("monitor %s unreachable: %v", e.endpoint, e.err)
}

// timeoutError is returned when the caller's context ends while hunting or retrying. It wraps
// ErrTimeout, ErrNoQuorum when the last monitor reached answered Unavailable, and the last error.
type timeoutError struct {
	last error
}

func (e *timeoutError) Error() string {
	if e.last == nil {
		return "timed out before any monitor answered"
	}
	var ue *unreachableError
	if errors.As(e.last, &ue) {
		return "no monitor reachable before the deadline (last: " + e.last.Error() + ")"
	}
	if errors.Is(e.last, ErrNoQuorum) {
		return "no quorum before the deadline (last: " + e.last.Error() + ")"
	}
	return "timed out (last: " + e.last.Error() + ")"
}

func (e *timeoutError) Unwrap() []error {
	errs := []error{ErrTimeout}
	if e.last != nil {
		errs = append(errs, e.last)
	}
	return errs
}
