//go:build !unix

package server

import "os"

// lockDataDir is a no-op where advisory file locks are not available.
func lockDataDir(dir string) (*os.File, error) { return nil, nil }
