// Regenerates tests/data/tokenizers/<family>/{tokenizer.json,cases.json}: small BPE tokenizers
// built with the exact normalizer / pre-tokenizer / decoder / post-processor configuration of each
// MoE family's published tokenizer.json, and what Hugging Face's own `tokenizers` library (the
// Rust crate, through its official Node bindings; version pinned in tokenizer_fixtures/package.json)
// answers for a list of hard test strings.
//
//   cd scripts/tokenizer_fixtures && npm ci && node ../gen_tokenizer_fixtures.mjs
//
// Vocabularies are trained here (a plain BPE trainer on the text the real pipeline pre-tokenizes),
// because the Node bindings expose no BpeTrainer options; every expected id and decoded string comes
// from the library itself. Nothing here runs at build or test time.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, 'tokenizer_fixtures', 'package.json'));
const tk = require('tokenizers');
const tkVersion = require('tokenizers/package.json').version;
const outRoot = path.join(here, '..', 'tests', 'data', 'tokenizers');

// ------------------------------------------------------------------------------------------------
// Training text: several scripts, code, numbers, punctuation. Rare characters are left out on
// purpose so that the test strings need byte fallback / unknown bytes.
const TRAIN = [
  "The quick brown fox jumps over the lazy dog. It's a test, isn't it? We'll see, they've said.",
  "Hello world! Hello there, hello again. The world is big and the dog is lazy.",
  "Tokenizers split text into tokens; tokens become ids, and ids become text again.",
  "Mixture-of-experts models route each token to a few experts out of many experts.",
  "def forward(self, x):\n    return self.experts(x) + self.shared(x)  # residual\n",
  "for i in range(10):\n\tprint(i * 2, i ** 3)\n",
  "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14159 1,000,000 and 12345678.",
  "中文测试：你好，世界！我们今天学习分词器。这是一个简单的例子。",
  "日本語のテキストです。カタカナとひらがなを使います。こんにちは世界。",
  "مرحبا بالعالم. هذا نص عربي قصير للاختبار.",
  "Привет, мир! Это короткий русский текст для проверки. Ёлка и ёж.",
  "Ça va? Très bien, merci. Café, naïve, résumé, über, straße.",
  "Emoji: 😀 😀 👍 ❤️ and more text after them.",
  "   indented line\n\n\nafter blank lines\r\nwindows line\n",
  "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z a b c d e f g h i j k l m n o p q r s t u v w x y z",
  "(brackets) [square] {curly} <angle> \"quotes\" 'single' - _ = + * / \\ | @ # $ % ^ & ! ? . , ; :",
];

// Test strings: mixed scripts, emoji (ZWJ, skin tone, flags), digit runs, whitespace runs, contractions,
// special tokens inside the text, characters outside the training text, NFC vs NFD forms.
const CASES = [
  "",
  " ",
  "\n",
  "Hello world",
  "Hello, world! It's a test: don't stop, we'll see 'em. THEY'RE HERE, I'M SURE, YOU'VE SEEN IT'S ON",
  "The quick brown fox jumps over the lazy dog.",
  "  leading spaces and trailing   ",
  "tabs\tand\nnewlines\r\n\n  mixed \t \n end\n\n",
  "a                    b",
  "        ",
  "\t\t\tx",
  "1234567890 and 3.14159, 1,000,000 then 42x7 ٣٤٥ ½",
  "中文测试：你好，世界！",
  "日本語のテキスト、カタカナとひらがな。",
  "مرحبا بالعالم",
  "Привет, мир! Ёлка.",
  "한국어 텍스트",
  "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇺🇸🇯🇵 heart ❤️",
  "NFC caf\u00e9 vs NFD cafe\u0301, \u00c5 vs A\u030a, \u1100\u1161\u11a8 vs \uac01",
  "a\u0300\u0301\u0302 combining",
  "rare: ꙮ ᚠᚢᚦ 𝄞 ﷽ 𓀀",
  "\u00a0nbsp\u2003em space\u3000ideographic",
  "don\u2019t \u201cquotes\u201d \u2018single\u2019\u2026 \u2014 dash",
  "Price: $100.00 (20% off) <b>bold</b> a+b=c",
  "def f(x):\n    return x**2  # comment\n",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  "hahahahahahahahaha",
  "bad \ufffd replacement char",
  "ＡＢＣ full-width １２３",
  "<s>Hello</s>",
  " <s> x </s> ",
  "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
  "text<|endoftext|>more",
  "<|begin_of_text|>Hi<|eot_id|>",
  "<\uff5cbegin\u2581of\u2581sentence\uff5c>Hello<\uff5cend\u2581of\u2581sentence\uff5c>",
  "[INST] question [/INST] answer</s>",
  "contact |||EMAIL_ADDRESS||| now",
  "x<sw>y <sw> z",
  "a <mask> b  <mask>c",
  "\u2581already\u2581meta \u2581",
];

// ------------------------------------------------------------------------------------------------
// Pipelines (structures as in the published tokenizer.json files).

const GPT2_RE = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const QWEN2_RE =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const LLAMA3_RE =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const DSV3_RES = [
  "\\p{N}{1,3}",
  "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
  "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
];
const DSV2_RES = [
  "[\r\n]",
  "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+",
  "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
  "\\s+$",
  "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
];

const split = (re) => ({ type: 'Split', pattern: { Regex: re }, behavior: 'Isolated', invert: false });
const byteLevel = (addPrefixSpace, useRegex) =>
  ({ type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: useRegex });
const byteLevelDecoder = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };
const byteLevelPost = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true };
const template = (bos, bosId) => ({
  type: 'TemplateProcessing',
  single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
  pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
         { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
  special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
});
const added = (content, opts = {}) => ({
  content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true, ...opts,
});
const SP = '\u2581';
const spDecoders = [
  { type: 'Replace', pattern: { String: SP }, content: ' ' },
  { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 },
];

// kind 'byte': ids 0..255 are the byte-level alphabet; 'sp': <unk> <s> </s> <0x00>..<0xFF>, chars.
const FAMILIES = [
  {
    name: 'gpt2', kind: 'byte', merges: 250,
    normalizer: null, pre_tokenizer: byteLevel(false, true), post_processor: byteLevelPost,
    decoder: byteLevelDecoder,
    added: [added('<|endoftext|>'), added('<sw>', { single_word: true, special: false })],
  },
  {
    name: 'qwen2', kind: 'byte', merges: 250,
    normalizer: { type: 'NFC' },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [split(QWEN2_RE), byteLevel(false, false)] },
    post_processor: byteLevelPost, decoder: byteLevelDecoder,
    added: [added('<|endoftext|>'), added('<|im_start|>'), added('<|im_end|>')],
  },
  {
    name: 'llama3', kind: 'byte', merges: 250, ignore_merges: true,
    normalizer: null,
    pre_tokenizer: { type: 'Sequence', pretokenizers: [split(LLAMA3_RE), byteLevel(false, false)] },
    bos: '<|begin_of_text|>', decoder: byteLevelDecoder,
    added: [added('<|begin_of_text|>'), added('<|end_of_text|>'), added('<|eot_id|>')],
  },
  {
    name: 'olmoe', kind: 'byte', merges: 250,
    normalizer: { type: 'NFC' }, pre_tokenizer: byteLevel(false, true),
    post_processor: byteLevelPost, decoder: byteLevelDecoder,
    added: [added('<|endoftext|>'), added('<|padding|>'),
            added('|||EMAIL_ADDRESS|||', { special: false, normalized: true }),
            added('<mask>', { lstrip: true, rstrip: true })],
  },
  {
    name: 'deepseek_v3', kind: 'byte', merges: 250,
    normalizer: null,
    pre_tokenizer: { type: 'Sequence', pretokenizers: [...DSV3_RES.map(split), byteLevel(false, false)] },
    bos: '<\uff5cbegin\u2581of\u2581sentence\uff5c>', decoder: byteLevelDecoder,
    added: [added('<\uff5cbegin\u2581of\u2581sentence\uff5c>'), added('<\uff5cend\u2581of\u2581sentence\uff5c>')],
  },
  {
    name: 'deepseek_v2', kind: 'byte', merges: 250,
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [...DSV2_RES.map(split), { type: 'Digits', individual_digits: true },
                      byteLevel(false, false)],
    },
    bos: '<\uff5cbegin\u2581of\u2581sentence\uff5c>', decoder: byteLevelDecoder,
    added: [added('<\uff5cbegin\u2581of\u2581sentence\uff5c>'), added('<\uff5cend\u2581of\u2581sentence\uff5c>')],
  },
  {
    // Llama 2 / Mixtral / Mistral v0.1: normalizer form, merges in the legacy "a b" string form.
    name: 'mixtral', kind: 'sp', merges: 220, legacy_merges: true,
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: SP },
                                                   { type: 'Replace', pattern: { String: ' ' }, content: SP }] },
    pre_tokenizer: null, bos: '<s>',
    decoder: { type: 'Sequence', decoders: spDecoders },
  },
  {
    // Newer conversions (Mistral v0.3 style): Metaspace pre-tokenizer and decoder, control tokens.
    name: 'mistral', kind: 'sp', merges: 220,
    normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: SP, prepend_scheme: 'first', split: false },
    bos: '<s>',
    decoder: { type: 'Metaspace', replacement: SP, prepend_scheme: 'first', split: false },
    extra_added: [added('[INST]'), added('[/INST]')],
  },
  {
    // Not a published family: every other option the C++ side supports, checked against the
    // reference too (Split with a String pattern and each behavior, invert, Regex Replace
    // normalizer, ByteLevel with add_prefix_space and its own regex, Strip at the end).
    name: 'misc_bytelevel', kind: 'byte', merges: 120,
    normalizer: { type: 'Sequence', normalizers: [
      { type: 'Replace', pattern: { Regex: '\\s{3,}' }, content: '   ' }, { type: 'NFC' }] },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [
      { type: 'Split', pattern: { String: '-' }, behavior: 'MergedWithPrevious', invert: false },
      { type: 'Split', pattern: { Regex: '[,;]+' }, behavior: 'Removed', invert: false },
      { type: 'Split', pattern: { Regex: '\\p{Lu}' }, behavior: 'MergedWithNext', invert: false },
      { type: 'Split', pattern: { Regex: '[aeiou]' }, behavior: 'Contiguous', invert: true },
      { type: 'Digits', individual_digits: false },
      byteLevel(true, true)] },
    post_processor: byteLevelPost,
    decoder: { type: 'Sequence', decoders: [byteLevelDecoder,
      { type: 'Replace', pattern: { Regex: 'x+' }, content: 'X' },
      { type: 'Strip', content: '.', start: 1, stop: 1 }] },
    added: [added('<|endoftext|>')],
    // Hugging Face's Strip decoder panics (index underflow) when a token is shorter than what
    // start + stop would strip (e.g. an empty one), so the empty text is left out here and the
    // stripped character is one no decoded case consists of.
    skip_empty_text: true,
  },
  {
    // The older Metaspace form (add_prefix_space instead of prepend_scheme, split on) written
    // by hand, individual Digits, and a normalizer-side Replace.
    name: 'misc_metaspace', kind: 'sp', merges: 150,
    normalizer: { type: 'Replace', pattern: { String: '\t' }, content: '  ' },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [
      { type: 'Digits', individual_digits: true },
      { type: 'Metaspace', replacement: SP, prepend_scheme: 'always', split: true }] },
    decoder: { type: 'Sequence', decoders: [
      { type: 'Metaspace', replacement: SP, prepend_scheme: 'always', split: true },
      { type: 'ByteFallback' }, { type: 'Fuse' }] },
    legacy_metaspace: true,
  },
];

// ------------------------------------------------------------------------------------------------

function skeleton(f, vocab, merges, addedTokens) {
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: addedTokens,
    normalizer: f.normalizer, pre_tokenizer: f.pre_tokenizer,
    post_processor: f.post_processor ?? null, decoder: f.decoder,
    model: {
      type: 'BPE', dropout: null, unk_token: f.kind === 'sp' ? '<unk>' : null,
      continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: f.kind === 'sp',
      byte_fallback: f.kind === 'sp', ignore_merges: !!f.ignore_merges, vocab, merges,
    },
  };
}

// Words of the training text as the family's own normalizer + pre-tokenizer produce them.
function trainingWords(f) {
  const probe = tk.Tokenizer.fromString(JSON.stringify(skeleton(f, {}, [], [])));
  const norm = probe.getNormalizer();
  const pre = probe.getPreTokenizer();
  const counts = new Map();
  for (const line of TRAIN) {
    let text = norm ? norm.normalizeString(line) : line;
    let pieces = pre ? pre.preTokenizeString(text).map((p) => p[0]) : [text];
    if (f.kind === 'sp') pieces = pieces.flatMap((p) => p.split(/(?=\u2581)/u));  // train within words
    for (const p of pieces) if (p) counts.set(p, (counts.get(p) ?? 0) + 1);
  }
  return counts;
}

// Plain BPE: repeatedly merge the most frequent adjacent pair (ties: lexicographic), at most n times.
function trainMerges(counts, n) {
  const words = [...counts].map(([w, c]) => ({ syms: [...w], c }));
  const merges = [];
  for (let step = 0; step < n; ++step) {
    const pairs = new Map();
    for (const w of words)
      for (let i = 0; i + 1 < w.syms.length; ++i) {
        const k = w.syms[i] + '\u0000' + w.syms[i + 1];
        pairs.set(k, (pairs.get(k) ?? 0) + w.c);
      }
    let best = null, bestC = 1;
    for (const [k, c] of pairs) if (c > bestC || (c === bestC && best !== null && k < best)) { best = k; bestC = c; }
    if (best === null) break;
    const [a, b] = best.split('\u0000');
    merges.push([a, b]);
    for (const w of words) {
      const out = [];
      for (let i = 0; i < w.syms.length; ++i) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) { out.push(a + b); ++i; }
        else out.push(w.syms[i]);
      }
      w.syms = out;
    }
  }
  return merges;
}

function build(f) {
  const counts = trainingWords(f);
  const vocab = {};
  const add = (t) => { if (!(t in vocab)) vocab[t] = Object.keys(vocab).length; };
  let addedTokens = [];
  if (f.kind === 'byte') {
    const alphabet = tk.byteLevelAlphabet().sort((x, y) => x.codePointAt(0) - y.codePointAt(0));
    alphabet.forEach(add);
  } else {
    ['<unk>', '<s>', '</s>'].forEach(add);
    for (let b = 0; b < 256; ++b) add(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    const charCounts = new Map();
    for (const [w, c] of counts) for (const ch of w) charCounts.set(ch, (charCounts.get(ch) ?? 0) + c);
    [...charCounts].filter(([, c]) => c >= 2).map(([ch]) => ch).sort().forEach(add);
  }
  const merges = trainMerges(counts, f.merges);
  for (const [a, b] of merges) add(a + b);
  const specials = f.kind === 'sp' ? [added('<unk>'), added('<s>'), added('</s>'), ...(f.extra_added ?? [])]
                                   : f.added;
  for (const t of specials) {
    if (!(t.content in vocab)) add(t.content);
    addedTokens.push({ id: vocab[t.content], ...t });
  }
  const json = skeleton(f, vocab, merges, addedTokens);
  if (f.bos) json.post_processor = f.kind === 'byte'
    ? { type: 'Sequence', processors: [byteLevelPost, template(f.bos, vocab[f.bos])] }
    : template(f.bos, vocab[f.bos]);
  // Round trip through the library so the file is exactly what it writes.
  const tmp = path.join(outRoot, `.${f.name}.tmp.json`);
  tk.Tokenizer.fromString(JSON.stringify(json)).save(tmp, false);
  let text = fs.readFileSync(tmp, 'utf8');
  fs.unlinkSync(tmp);
  if (f.legacy_merges) {
    const j = JSON.parse(text);
    j.model.merges = j.model.merges.map(([a, b]) => `${a} ${b}`);
    text = JSON.stringify(j);
  }
  if (f.legacy_metaspace) {
    const j = JSON.parse(text);
    for (const p of j.pre_tokenizer.pretokenizers)
      if (p.type === 'Metaspace') { delete p.prepend_scheme; delete p.split; p.add_prefix_space = true; }
    text = JSON.stringify(j);
  }
  return text;
}

async function cases(tok, f) {
  const out = [];
  for (const text of CASES) {
    if (f.skip_empty_text && text === '') continue;
    const plain = await tok.encode(text, null, { addSpecialTokens: false });
    const withSpecial = await tok.encode(text, null, { addSpecialTokens: true });
    const ids = withSpecial.getIds();
    out.push({
      text,
      ids: plain.getIds(),
      ids_with_special: ids,
      tokens: withSpecial.getTokens(),
      decoded: await tok.decode(ids, false),
      decoded_skip_special: await tok.decode(ids, true),
    });
  }
  return out;
}

fs.mkdirSync(outRoot, { recursive: true });
for (const f of FAMILIES) {
  const dir = path.join(outRoot, f.name);
  fs.mkdirSync(dir, { recursive: true });
  const text = build(f);
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), text);
  const tok = tk.Tokenizer.fromString(text);
  const doc = { generator: 'scripts/gen_tokenizer_fixtures.mjs', reference: `tokenizers (npm) ${tkVersion}`,
                vocab_size: tok.getVocabSize(true), cases: await cases(tok, f) };
  // One case per line: small, and diffs stay readable.
  const lines = doc.cases.map((c) => '  ' + JSON.stringify(c));
  const head = JSON.stringify({ ...doc, cases: [] }).replace(/"cases":\[\]\}$/, '"cases": [\n');
  fs.writeFileSync(path.join(dir, 'cases.json'), head + lines.join(',\n') + '\n]}\n');
  console.log(`${f.name}: vocab ${doc.vocab_size}, ${doc.cases.length} cases`);
}
