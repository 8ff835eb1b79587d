//go:build !linux

package edge

import "testing"

// settler: without direct writes every frame goes through the writer
// goroutine; there is nothing to wait for.
func settler(testing.TB, *conn) func() { return func() {} }
