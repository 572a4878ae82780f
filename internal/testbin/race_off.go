//go:build !race

package testbin

// Race reports whether the tests run with the race detector.
const Race = false
