//go:build race

package argon2id

import (
	"runtime"
	"unsafe"
)

// raceShadow has one Go-heap byte per block. The race detector does not see
// the arena (memory outside the Go heap), so the lanes report their block
// reads and writes here: a missing synchronisation between lanes shows as a
// data race on the shadow.
type raceShadow []byte

func newRaceShadow(blocks uint32) raceShadow { return make(raceShadow, blocks) }

func (s raceShadow) read(i uint32)  { runtime.RaceRead(unsafe.Pointer(&s[i])) }
func (s raceShadow) write(i uint32) { runtime.RaceWrite(unsafe.Pointer(&s[i])) }
