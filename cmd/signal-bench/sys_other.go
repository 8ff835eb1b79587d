//go:build !linux

package main

import (
	"errors"
	"syscall"
	"time"
)

func bindNoPort(network, address string, c syscall.RawConn) error { return nil }

func raiseNoFile() (uint64, error) { return 0, nil }

func cpuTime() time.Duration { return 0 }

func procCPU(int) (time.Duration, error) { return 0, errors.New("needs /proc (Linux)") }
