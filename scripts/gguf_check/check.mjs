// Parses GGUF files with Hugging Face's @huggingface/gguf (a third-party reader; version pinned in
// package.json) and compares what it reads field by field with scripts/gguf_reference.py's
// reading, given as JSON on stdin ({file: summary}). Used by scripts/gguf_crosscheck.sh.
import { gguf } from '@huggingface/gguf';
import fs from 'node:fs';

const want = JSON.parse(fs.readFileSync(0, 'utf8'));
const F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9, F64 = 12;

function floatBits(x) {
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, x, true);
  return dv.getBigUint64(0, true).toString(16).padStart(16, '0');
}
// Same normal form as gguf_reference.py's summary(): typed scalars, untyped nested arrays.
function untyped(x) {
  if (Array.isArray(x)) return x.map(untyped);
  if (typeof x === 'bigint') return x.toString();
  if (typeof x === 'number') return Number.isInteger(x) ? String(x) : floatBits(x);
  return x;
}
function norm(type, value, subType) {
  if (type === ARRAY) {
    return { t: ARRAY, e: subType,
             v: subType === ARRAY ? value.map(untyped) : value.map((x) => norm(subType, x)) };
  }
  if (type === STRING || type === BOOL) return { t: type, v: value };
  if (type === F32 || type === F64) return { t: type, v: floatBits(value) };
  return { t: type, v: value.toString() };
}

let failures = 0;
for (const [file, ref] of Object.entries(want)) {
  const r = await gguf(file, { allowLocalFile: true, typedMetadata: true });
  const got = {
    version: r.typedMetadata.version.value,
    data_offset: Number(r.tensorDataOffset),
    metadata: Object.entries(r.typedMetadata)
      .filter(([k]) => !['version', 'tensor_count', 'kv_count'].includes(k))
      .map(([k, v]) => [k, norm(v.type, v.value, v.subType)]),
    tensors: r.tensorInfos.map((t) => [t.name, t.dtype, t.shape.map(String), String(t.offset)]),
  };
  const a = JSON.stringify(got), b = JSON.stringify(ref);
  if (a === b) {
    console.log(`${file}: @huggingface/gguf reads the same ${got.metadata.length} keys and ` +
                `${got.tensors.length} tensors (data at ${got.data_offset})`);
  } else {
    failures++;
    console.log(`${file}: MISMATCH\n  @huggingface/gguf: ${a.slice(0, 2000)}\n  reference:         ${b.slice(0, 2000)}`);
  }
}
process.exit(failures ? 1 : 0);
