//go:build goexperiment.runtimesecret

package memlock

import "runtime/secret"

// Do runs f so that the registers and stack it used are erased when it
// returns, and the heap it allocated is erased once the garbage collector
// finds it unreachable (runtime/secret). It does not cover goroutines that f
// starts, nor global variables it writes.
func Do(f func()) { secret.Do(f) }

// Hygiene says how thoroughly Do erases: "full" in a build with
// GOEXPERIMENT=runtimesecret on linux/amd64 or arm64.
const Hygiene = "full"
