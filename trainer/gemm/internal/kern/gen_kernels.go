//go:build ignore

// gen_kernels writes kernels_amd64.s, the AVX-512 micro-kernels of package gemm.
// Run it with `go generate` in this directory. The kernels are generated rather than
// written by hand because each one is a fully unrolled register tile: a C tile of
// mr x (16*nv) floats lives in mr*nv ZMM accumulators for the whole k loop.
package main

import (
	"bytes"
	"fmt"
	"log"
	"os"
)

// The tile height and the widths (in 16-float vectors) that get a kernel. The driver
// uses the widest kernel for interior tiles and the narrowest that covers an edge.
const mr = 8

var widths = []int{1, 2, 3}

// Registers of the kernels (ABI0, arguments on the stack).
const (
	regA     = "AX"  // A micro-panel: row 0 of the current k step
	regA4    = "R14" // row 4 of the current k step
	regAStr  = "R11" // bytes from one k step of A to the next
	regARow  = "R12" // bytes from one row of A to the next
	regARow3 = "R13" // three times that
	regB     = "BX"  // B rows, 16*nv floats used per k step
	regK     = "CX"  // k steps left
	regBStr  = "DX"  // bytes from one B row to the next
	regC     = "DI"  // C tile, row-major
	regLdc   = "SI"  // bytes from one C row to the next
	regRows  = "R8"  // rows of the tile to store
	regFlags = "R9"
	regBias  = "R10"
)

// Flag bits of the kernels, mirrored by the constants in kern.go.
const (
	flagLoadC = 1 // acc += beta*C before storing
	flagBias  = 2 // acc += bias[row]
	flagReLU  = 4 // acc = max(0, acc)
)

type gen struct {
	buf bytes.Buffer
	pfb int // when > 0, kernel prefetches the row of B pfb steps ahead
	// masked makes the AVX2 kernel's last vector of B and C a masked one, the first
	// tail columns of it (an argument) loaded and stored and the rest left alone.
	masked bool
}

func (g *gen) f(format string, args ...any) { fmt.Fprintf(&g.buf, format+"\n", args...) }

func acc(r, v, nv int) string { return fmt.Sprintf("Z%d", r*nv+v) }

// step emits one k step at offset u of an unrolled group: nv loads of B (the last one
// masked by K1, so an unpadded edge of B reads zeros), then per row a broadcast of the
// A value and nv FMAs.
func (g *gen) step(nv, u int) {
	if u > 0 {
		g.advance()
	}
	if g.pfb > 0 {
		for off := 0; off < 64*nv; off += 64 {
			g.f("\tPREFETCHT0 %d(%s)(%s*%d)", off, regB, regBStr, g.pfb)
		}
		g.f("\tPREFETCHT0 %d(%s)(%s*%d)", 64*nv-1, regB, regBStr, g.pfb)
	}
	for v := 0; v < nv; v++ {
		if v == nv-1 {
			g.f("\tVMOVUPS.Z %d(%s), K1, Z%d", 64*v, regB, 24+v)
		} else {
			g.f("\tVMOVUPS %d(%s), Z%d", 64*v, regB, 24+v)
		}
	}
	rowAddr := []string{
		"(" + regA + ")", "(" + regA + ")(" + regARow + "*1)", "(" + regA + ")(" + regARow + "*2)", "(" + regA + ")(" + regARow3 + "*1)",
		"(" + regA4 + ")", "(" + regA4 + ")(" + regARow + "*1)", "(" + regA4 + ")(" + regARow + "*2)", "(" + regA4 + ")(" + regARow3 + "*1)",
	}
	for r := 0; r < mr; r++ {
		bc := 28 + r%2
		g.f("\tVBROADCASTSS %s, Z%d", rowAddr[r], bc)
		for v := 0; v < nv; v++ {
			g.f("\tVFMADD231PS Z%d, Z%d, %s", 24+v, bc, acc(r, v, nv))
		}
	}
}

// advance moves A and B on by one k step.
func (g *gen) advance() {
	g.f("\tADDQ %s, %s", regBStr, regB)
	g.f("\tADDQ %s, %s", regAStr, regA)
	g.f("\tADDQ %s, %s", regAStr, regA4)
}

func (g *gen) kernel(nv int) {
	name := fmt.Sprintf("AVX512x%dx%d", mr, 16*nv)
	if g.pfb > 0 {
		name += "PFB"
	}
	const unroll = 4
	g.f("// func %s(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32)", name)
	g.f("TEXT ·%s(SB), NOSPLIT, $0-96", name)
	g.f("\tMOVQ k+0(FP), %s", regK)
	g.f("\tMOVQ b+32(FP), %s", regB)
	g.f("\tMOVQ bstride+40(FP), %s", regBStr)
	g.f("\tSHLQ $2, %s", regBStr)
	g.f("\tMOVQ c+48(FP), %s", regC)
	g.f("\tMOVQ ldc+56(FP), %s", regLdc)
	g.f("\tSHLQ $2, %s", regLdc)
	g.f("\tMOVQ rows+64(FP), %s", regRows)
	g.f("\tKMOVW mask+72(FP), K1")
	g.f("\tMOVL flags+76(FP), %s", regFlags)
	g.f("\tMOVQ bias+88(FP), %s", regBias)
	// Fetch the C tile while the k loop runs; prefetches never fault, so rows past
	// the tile's cost nothing but a slot.
	g.f("\tMOVQ %s, R12", regC)
	for r := 0; r < mr; r++ {
		for off := 0; off < 64*nv; off += 64 {
			g.f("\tPREFETCHT0 %d(R12)", off)
		}
		g.f("\tPREFETCHT0 %d(R12)", 64*nv-1)
		g.f("\tADDQ %s, R12", regLdc)
	}
	g.f("\tMOVQ a+8(FP), %s", regA)
	g.f("\tMOVQ arow+16(FP), %s", regARow)
	g.f("\tSHLQ $2, %s", regARow)
	g.f("\tLEAQ (%s)(%s*2), %s", regARow, regARow, regARow3)
	g.f("\tLEAQ (%s)(%s*4), %s", regA, regARow, regA4)
	g.f("\tMOVQ astep+24(FP), %s", regAStr)
	g.f("\tSHLQ $2, %s", regAStr)
	for r := 0; r < mr; r++ {
		for v := 0; v < nv; v++ {
			g.f("\tVPXORD %s, %s, %s", acc(r, v, nv), acc(r, v, nv), acc(r, v, nv))
		}
	}
	g.f("\tCMPQ %s, $%d", regK, unroll)
	g.f("\tJLT tail%d", nv)
	g.f("loop%d:", nv)
	for u := 0; u < unroll; u++ {
		g.step(nv, u)
	}
	g.advance()
	g.f("\tSUBQ $%d, %s", unroll, regK)
	g.f("\tCMPQ %s, $%d", regK, unroll)
	g.f("\tJGE loop%d", nv)
	g.f("tail%d:", nv)
	g.f("\tTESTQ %s, %s", regK, regK)
	g.f("\tJEQ store%d", nv)
	g.step(nv, 0)
	g.advance()
	g.f("\tDECQ %s", regK)
	g.f("\tJMP tail%d", nv)

	// Epilogue, row by row: rows past `rows` belong to the zero padding of A.
	g.f("store%d:", nv)
	g.f("\tVBROADCASTSS beta+80(FP), Z29")
	g.f("\tVPXORD Z30, Z30, Z30")
	for r := 0; r < mr; r++ {
		l := fmt.Sprintf("%d_%d", nv, r)
		if r > 0 {
			g.f("\tCMPQ %s, $%d", regRows, r)
			g.f("\tJLE done%d", nv)
		}
		g.f("\tTESTL $%d, %s", flagLoadC, regFlags)
		g.f("\tJEQ noload%s", l)
		for v := 0; v < nv; v++ {
			if v == nv-1 {
				g.f("\tVMOVUPS.Z %d(%s), K1, Z31", 64*v, regC)
			} else {
				g.f("\tVMOVUPS %d(%s), Z31", 64*v, regC)
			}
			g.f("\tVFMADD231PS Z31, Z29, %s", acc(r, v, nv))
		}
		g.f("noload%s:", l)
		g.f("\tTESTL $%d, %s", flagBias, regFlags)
		g.f("\tJEQ nobias%s", l)
		g.f("\tVBROADCASTSS %d(%s), Z31", 4*r, regBias)
		for v := 0; v < nv; v++ {
			g.f("\tVADDPS Z31, %s, %s", acc(r, v, nv), acc(r, v, nv))
		}
		g.f("nobias%s:", l)
		g.f("\tTESTL $%d, %s", flagReLU, regFlags)
		g.f("\tJEQ norelu%s", l)
		for v := 0; v < nv; v++ {
			// max(0, x) with x as the second source, so a NaN passes through.
			g.f("\tVMAXPS %s, Z30, %s", acc(r, v, nv), acc(r, v, nv))
		}
		g.f("norelu%s:", l)
		for v := 0; v < nv; v++ {
			if v == nv-1 {
				g.f("\tVMOVUPS %s, K1, %d(%s)", acc(r, v, nv), 64*v, regC)
			} else {
				g.f("\tVMOVUPS %s, %d(%s)", acc(r, v, nv), 64*v, regC)
			}
		}
		if r < mr-1 {
			g.f("\tADDQ %s, %s", regLdc, regC)
		}
	}
	g.f("done%d:", nv)
	g.f("\tVZEROUPPER")
	g.f("\tRET")
	g.f("")
}

// transpose emits Transpose8: for each block of 16 columns, 8 rows are loaded, put
// through two rounds of unpacks (which leave, in each 128-bit lane, 4 rows of one
// column) and one round of two-table permutes (which pair rows 0-3 and 4-7 of a
// column in each 256-bit half), and stored as 16 rows of 8 floats. A last block of
// fewer than 16 columns is loaded under mask and only its rows are stored.
func (g *gen) transpose() {
	g.f("// permLo and permHi pick 128-bit lanes 0,1 and 2,3 of two tables, interleaved.")
	for i, idx := range [][]int{{0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23}, {8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31}} {
		name := []string{"permLo", "permHi"}[i]
		for j, v := range idx {
			g.f("DATA %s<>+%d(SB)/4, $%d", name, 4*j, v)
		}
		g.f("GLOBL %s<>(SB), RODATA|NOPTR, $64", name)
	}
	g.f("")
	g.f("// func Transpose8(src *float32, lds int, dst *float32, ldd int, cols int)")
	g.f("TEXT ·Transpose8(SB), NOSPLIT, $0-40")
	g.f("\tMOVQ src+0(FP), SI")
	g.f("\tMOVQ lds+8(FP), DX")
	g.f("\tSHLQ $2, DX")
	g.f("\tMOVQ dst+16(FP), DI")
	g.f("\tMOVQ ldd+24(FP), R8")
	g.f("\tSHLQ $2, R8")
	g.f("\tMOVQ cols+32(FP), CX")
	g.f("\tLEAQ (DX)(DX*2), R9")  // 3*lds
	g.f("\tLEAQ (SI)(DX*4), R10") // row 4
	g.f("\tLEAQ (R8)(R8*2), R12") // 3*ldd
	g.f("\tMOVQ R8, AX")
	g.f("\tSHLQ $4, AX") // 16*ldd: one block of output rows
	g.f("\tVMOVUPS permLo<>(SB), Z30")
	g.f("\tVMOVUPS permHi<>(SB), Z31")
	g.f("\tCMPQ CX, $16")
	g.f("\tJLT ttail")
	g.f("tloop:")
	g.transposeBlock(false)
	g.f("\tADDQ $64, SI")
	g.f("\tADDQ $64, R10")
	g.f("\tADDQ AX, DI")
	g.f("\tSUBQ $16, CX")
	g.f("\tCMPQ CX, $16")
	g.f("\tJGE tloop")
	g.f("ttail:")
	g.f("\tTESTQ CX, CX")
	g.f("\tJEQ tdone")
	g.f("\tMOVL $1, BX")
	g.f("\tSHLL CX, BX")
	g.f("\tDECL BX")
	g.f("\tKMOVW BX, K1")
	g.transposeBlock(true)
	g.f("tdone:")
	g.f("\tVZEROUPPER")
	g.f("\tRET")
	g.f("")
}

// transposeBlock emits one 8 x 16 transpose from SI/R10 to DI; masked loads under K1
// and stores only rows p < CX.
func (g *gen) transposeBlock(masked bool) {
	for r, addr := range []string{"(SI)", "(SI)(DX*1)", "(SI)(DX*2)", "(SI)(R9*1)", "(R10)", "(R10)(DX*1)", "(R10)(DX*2)", "(R10)(R9*1)"} {
		if masked {
			g.f("\tVMOVUPS.Z %s, K1, Z%d", addr, r)
		} else {
			g.f("\tVMOVUPS %s, Z%d", addr, r)
		}
	}
	for i := 0; i < 4; i++ {
		g.f("\tVUNPCKLPS Z%d, Z%d, Z%d", 2*i+1, 2*i, 8+2*i)
		g.f("\tVUNPCKHPS Z%d, Z%d, Z%d", 2*i+1, 2*i, 9+2*i)
	}
	// U0..U3 (Z16..Z19): rows 0-3 of columns 4l+0..3; U4..U7 (Z20..Z23): rows 4-7.
	for h := 0; h < 2; h++ {
		t := 8 + 4*h
		g.f("\tVUNPCKLPD Z%d, Z%d, Z%d", t+2, t, 16+4*h)
		g.f("\tVUNPCKHPD Z%d, Z%d, Z%d", t+2, t, 17+4*h)
		g.f("\tVUNPCKLPD Z%d, Z%d, Z%d", t+3, t+1, 18+4*h)
		g.f("\tVUNPCKHPD Z%d, Z%d, Z%d", t+3, t+1, 19+4*h)
	}
	g.f("\tLEAQ (DI)(R8*4), R11")
	g.f("\tLEAQ (R11)(R8*4), R13")
	g.f("\tLEAQ (R13)(R8*4), BX")
	off := []string{"", "(R8*1)", "(R8*2)", "(R12*1)"}
	store := func(p int, ins string) {
		if masked {
			g.f("\tCMPQ CX, $%d", p)
			g.f("\tJLE tskip%d", p)
		}
		g.f("\t%s", ins)
		if masked {
			g.f("tskip%d:", p)
		}
	}
	for s := 0; s < 4; s++ {
		g.f("\tVMOVAPS Z30, Z24")
		g.f("\tVPERMI2PS Z%d, Z%d, Z24", 20+s, 16+s)
		g.f("\tVMOVAPS Z31, Z25")
		g.f("\tVPERMI2PS Z%d, Z%d, Z25", 20+s, 16+s)
		store(s, fmt.Sprintf("VMOVUPS Y24, (DI)%s", off[s]))
		store(4+s, fmt.Sprintf("VEXTRACTF64X4 $1, Z24, (R11)%s", off[s]))
		store(8+s, fmt.Sprintf("VMOVUPS Y25, (R13)%s", off[s]))
		store(12+s, fmt.Sprintf("VEXTRACTF64X4 $1, Z25, (BX)%s", off[s]))
	}
}

// avx2Kernel emits AVX2x4xW, W = 8*nv: a 4 x W tile in 4*nv YMM accumulators
// (row r, vector v in Y(r*nv+v)), for CPUs without AVX-512. There are no mask
// registers, so the tile is always whole vectors wide; rows are checked as above.
func (g *gen) avx2Kernel(nv int) {
	const rows, unroll = 4, 4
	name := fmt.Sprintf("AVX2x%dx%d", rows, 8*nv)
	if g.pfb > 0 {
		name += "PFB"
	}
	if g.masked {
		name += "M"
	}
	// The masked kernels keep the address of their lane mask in R14 (free once C is
	// prefetched) and load it where needed: no YMM register is spare with 12 accumulators.
	const maskAddr = "(R14)"
	yacc := func(r, v int) string { return fmt.Sprintf("Y%d", r*nv+v) }
	bReg := func(v int) string { return fmt.Sprintf("Y%d", 12+v) }
	const bc = "Y15"
	if g.masked {
		g.f("// func %s(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32, tail int)", name)
		g.f("TEXT ·%s(SB), NOSPLIT, $0-96", name)
		// Lanes 0..tail-1 of the mask are all ones: 8-tail floats into the table.
	} else {
		g.f("// func %s(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32)", name)
		g.f("TEXT ·%s(SB), NOSPLIT, $0-88", name)
	}
	g.f("\tMOVQ k+0(FP), %s", regK)
	g.f("\tMOVQ a+8(FP), %s", regA)
	g.f("\tMOVQ arow+16(FP), %s", regARow)
	g.f("\tSHLQ $2, %s", regARow)
	g.f("\tLEAQ (%s)(%s*2), %s", regARow, regARow, regARow3)
	g.f("\tMOVQ astep+24(FP), %s", regAStr)
	g.f("\tSHLQ $2, %s", regAStr)
	g.f("\tMOVQ b+32(FP), %s", regB)
	g.f("\tMOVQ bstride+40(FP), %s", regBStr)
	g.f("\tSHLQ $2, %s", regBStr)
	g.f("\tMOVQ c+48(FP), %s", regC)
	g.f("\tMOVQ ldc+56(FP), %s", regLdc)
	g.f("\tSHLQ $2, %s", regLdc)
	g.f("\tMOVQ rows+64(FP), %s", regRows)
	g.f("\tMOVL flags+72(FP), %s", regFlags)
	g.f("\tMOVQ bias+80(FP), %s", regBias)
	g.f("\tMOVQ %s, R14", regC)
	for r := 0; r < rows; r++ {
		g.f("\tPREFETCHT0 (R14)")
		g.f("\tPREFETCHT0 %d(R14)", 32*nv-1)
		g.f("\tADDQ %s, R14", regLdc)
	}
	if g.masked {
		// Lanes 0..tail-1 of the mask are all ones: 8-tail floats into the table.
		g.f("\tMOVQ tail+88(FP), AX")
		g.f("\tSHLQ $2, AX")
		g.f("\tLEAQ laneMask<>+32(SB), R14")
		g.f("\tSUBQ AX, R14")
		g.f("\tMOVQ a+8(FP), %s", regA)
	}
	for r := 0; r < rows; r++ {
		for v := 0; v < nv; v++ {
			g.f("\tVXORPS %s, %s, %s", yacc(r, v), yacc(r, v), yacc(r, v))
		}
	}
	rowAddr := []string{"(" + regA + ")", "(" + regA + ")(" + regARow + "*1)", "(" + regA + ")(" + regARow + "*2)", "(" + regA + ")(" + regARow3 + "*1)"}
	step := func() {
		if g.pfb > 0 {
			// Every line the row's 32*nv bytes can touch, whatever their alignment.
			for off := 0; off < 32*nv; off += 64 {
				g.f("\tPREFETCHT0 %d(%s)(%s*%d)", off, regB, regBStr, g.pfb)
			}
			g.f("\tPREFETCHT0 %d(%s)(%s*%d)", 32*nv-1, regB, regBStr, g.pfb)
		}
		for v := 0; v < nv; v++ {
			if g.masked && v == nv-1 {
				g.f("\tVMOVUPS %s, %s", maskAddr, bReg(v))
				g.f("\tVMASKMOVPS %d(%s), %s, %s", 32*v, regB, bReg(v), bReg(v))
			} else {
				g.f("\tVMOVUPS %d(%s), %s", 32*v, regB, bReg(v))
			}
		}
		for r := 0; r < rows; r++ {
			g.f("\tVBROADCASTSS %s, %s", rowAddr[r], bc)
			for v := 0; v < nv; v++ {
				g.f("\tVFMADD231PS %s, %s, %s", bReg(v), bc, yacc(r, v))
			}
		}
		g.f("\tADDQ %s, %s", regBStr, regB)
		g.f("\tADDQ %s, %s", regAStr, regA)
	}
	g.f("\tCMPQ %s, $%d", regK, unroll)
	g.f("\tJLT tail")
	g.f("loop:")
	for u := 0; u < unroll; u++ {
		step()
	}
	g.f("\tSUBQ $%d, %s", unroll, regK)
	g.f("\tCMPQ %s, $%d", regK, unroll)
	g.f("\tJGE loop")
	g.f("tail:")
	g.f("\tTESTQ %s, %s", regK, regK)
	g.f("\tJEQ store")
	step()
	g.f("\tDECQ %s", regK)
	g.f("\tJMP tail")
	g.f("store:")
	const yBeta, yZero, yTmp = "Y13", "Y14", "Y15"
	g.f("\tVBROADCASTSS beta+76(FP), %s", yBeta)
	g.f("\tVXORPS %s, %s, %s", yZero, yZero, yZero)
	for r := 0; r < rows; r++ {
		l := fmt.Sprint(r)
		if r > 0 {
			g.f("\tCMPQ %s, $%d", regRows, r)
			g.f("\tJLE done")
		}
		g.f("\tTESTL $%d, %s", flagLoadC, regFlags)
		g.f("\tJEQ noload%s", l)
		for v := 0; v < nv; v++ {
			if g.masked && v == nv-1 {
				g.f("\tVMOVUPS %s, %s", maskAddr, yTmp)
				g.f("\tVMASKMOVPS %d(%s), %s, %s", 32*v, regC, yTmp, yTmp)
			} else {
				g.f("\tVMOVUPS %d(%s), %s", 32*v, regC, yTmp)
			}
			g.f("\tVFMADD231PS %s, %s, %s", yTmp, yBeta, yacc(r, v))
		}
		g.f("noload%s:", l)
		g.f("\tTESTL $%d, %s", flagBias, regFlags)
		g.f("\tJEQ nobias%s", l)
		g.f("\tVBROADCASTSS %d(%s), %s", 4*r, regBias, yTmp)
		for v := 0; v < nv; v++ {
			g.f("\tVADDPS %s, %s, %s", yTmp, yacc(r, v), yacc(r, v))
		}
		g.f("nobias%s:", l)
		g.f("\tTESTL $%d, %s", flagReLU, regFlags)
		g.f("\tJEQ norelu%s", l)
		for v := 0; v < nv; v++ {
			g.f("\tVMAXPS %s, %s, %s", yacc(r, v), yZero, yacc(r, v))
		}
		g.f("norelu%s:", l)
		for v := 0; v < nv; v++ {
			if g.masked && v == nv-1 {
				g.f("\tVMOVUPS %s, %s", maskAddr, yTmp)
				g.f("\tVMASKMOVPS %s, %s, %d(%s)", yacc(r, v), yTmp, 32*v, regC)
			} else {
				g.f("\tVMOVUPS %s, %d(%s)", yacc(r, v), 32*v, regC)
			}
		}
		if r < rows-1 {
			g.f("\tADDQ %s, %s", regLdc, regC)
		}
	}
	g.f("done:")
	g.f("\tVZEROUPPER")
	g.f("\tRET")
	g.f("")
}

// transposeAVX2 emits Transpose8AVX2, Transpose8 for AVX2: 8 x 8 blocks through
// unpacks, in-lane shuffles and 128-bit lane permutes; the caller does cols%8.
func (g *gen) transposeAVX2() {
	g.f("// func Transpose8AVX2(src *float32, lds int, dst *float32, ldd int, blocks int)")
	g.f("TEXT ·Transpose8AVX2(SB), NOSPLIT, $0-40")
	g.f("\tMOVQ src+0(FP), SI")
	g.f("\tMOVQ lds+8(FP), DX")
	g.f("\tSHLQ $2, DX")
	g.f("\tMOVQ dst+16(FP), DI")
	g.f("\tMOVQ ldd+24(FP), R8")
	g.f("\tSHLQ $2, R8")
	g.f("\tMOVQ blocks+32(FP), CX")
	g.f("\tLEAQ (DX)(DX*2), R9")
	g.f("\tLEAQ (SI)(DX*4), R10")
	g.f("\tLEAQ (R8)(R8*2), R12")
	g.f("\tMOVQ R8, AX")
	g.f("\tSHLQ $3, AX") // 8*ldd: one block of output rows
	g.f("\tTESTQ CX, CX")
	g.f("\tJEQ adone")
	g.f("aloop:")
	for r, addr := range []string{"(SI)", "(SI)(DX*1)", "(SI)(DX*2)", "(SI)(R9*1)", "(R10)", "(R10)(DX*1)", "(R10)(DX*2)", "(R10)(R9*1)"} {
		g.f("\tVMOVUPS %s, Y%d", addr, r)
	}
	for i := 0; i < 4; i++ {
		g.f("\tVUNPCKLPS Y%d, Y%d, Y%d", 2*i+1, 2*i, 8+2*i)
		g.f("\tVUNPCKHPS Y%d, Y%d, Y%d", 2*i+1, 2*i, 9+2*i)
	}
	// S0..S3 (Y0..Y3): rows 0-3 of columns c and c+4 (c = 0..3); S4..S7 rows 4-7.
	for h := 0; h < 2; h++ {
		t := 8 + 4*h
		g.f("\tVSHUFPS $0x44, Y%d, Y%d, Y%d", t+2, t, 4*h)
		g.f("\tVSHUFPS $0xEE, Y%d, Y%d, Y%d", t+2, t, 4*h+1)
		g.f("\tVSHUFPS $0x44, Y%d, Y%d, Y%d", t+3, t+1, 4*h+2)
		g.f("\tVSHUFPS $0xEE, Y%d, Y%d, Y%d", t+3, t+1, 4*h+3)
	}
	g.f("\tLEAQ (DI)(R8*4), R11")
	off := []string{"", "(R8*1)", "(R8*2)", "(R12*1)"}
	for c := 0; c < 4; c++ {
		g.f("\tVPERM2F128 $0x20, Y%d, Y%d, Y%d", 4+c, c, 8+c)
		g.f("\tVPERM2F128 $0x31, Y%d, Y%d, Y%d", 4+c, c, 12+c)
		g.f("\tVMOVUPS Y%d, (DI)%s", 8+c, off[c])
		g.f("\tVMOVUPS Y%d, (R11)%s", 12+c, off[c])
	}
	g.f("\tADDQ $32, SI")
	g.f("\tADDQ $32, R10")
	g.f("\tADDQ AX, DI")
	g.f("\tDECQ CX")
	g.f("\tJNE aloop")
	g.f("adone:")
	g.f("\tVZEROUPPER")
	g.f("\tRET")
	g.f("")
}

func main() {
	var g gen
	g.f("// Code generated by gen_kernels.go; DO NOT EDIT.")
	g.f("")
	g.f("//go:build amd64 && !purego")
	g.f("")
	g.f("#include \"textflag.h\"")
	g.f("")
	for _, nv := range widths {
		g.kernel(nv)
	}
	// The PFB variants also prefetch the B row pfb steps ahead (measured best at 8).
	g.pfb = 8
	for _, nv := range widths {
		g.kernel(nv)
	}
	g.pfb = 0
	for _, nv := range widths {
		g.avx2Kernel(nv)
	}
	g.pfb = 8
	for _, nv := range widths {
		g.avx2Kernel(nv)
	}
	g.pfb = 0
	// The ragged right edge of a matrix: one masked vector after the whole ones.
	g.f("// laneMask is 8 lanes of ones then 8 of zeros: 32 bytes from 4*(8-t) in, the mask of t lanes.")
	for i := 0; i < 16; i++ {
		v := 0
		if i < 8 {
			v = -1
		}
		g.f("DATA laneMask<>+%d(SB)/4, $%d", 4*i, v)
	}
	g.f("GLOBL laneMask<>(SB), RODATA|NOPTR, $64")
	g.f("")
	g.masked = true
	for _, nv := range widths {
		g.avx2Kernel(nv)
	}
	g.masked = false
	g.transposeAVX2()
	g.transpose()
	if err := os.WriteFile("kernels_amd64.s", g.buf.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
}
