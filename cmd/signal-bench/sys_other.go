//go:build !linux

package main

import (
	"syscall"
	"time"
)

func bindNoPort(network, address string, c syscall.RawConn) error { return nil }

func raiseNoFile() (uint64, error) { return 0, nil }

func cpuTime() time.Duration { return 0 }
