// Compile the contracts with the pinned solc-js and write one artifact per contract
// ({abi, bytecode: {object}, deployedBytecode: {object}}) to proofs/artifacts/.
// `node contracts/compile.js --check` fails when the committed artifacts differ.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const root = path.join(__dirname, '..');
// The contract, and a test-only account that attacks its payments (used by the tests).
const sources = ['CairnStorage.sol', 'test/Attacker.sol'];
const input = {
  language: 'Solidity',
  sources: Object.fromEntries(
    sources.map((f) => [f, { content: fs.readFileSync(path.join(__dirname, f), 'utf8') }]),
  ),
  settings: {
    optimizer: { enabled: true, runs: 10000 },
    evmVersion: 'cancun',
    metadata: { bytecodeHash: 'none' },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
  },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (out.errors || []).filter((e) => e.severity === 'error');
for (const e of out.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

const check = process.argv.includes('--check');
const dir = path.join(root, 'artifacts');
fs.mkdirSync(dir, { recursive: true });
let stale = [];
for (const file of sources) {
  for (const [name, c] of Object.entries(out.contracts[file])) {
    const artifact = {
      compiler: `solc-js ${solc.version()}`,
      abi: c.abi,
      bytecode: { object: '0x' + c.evm.bytecode.object },
      deployedBytecode: { object: '0x' + c.evm.deployedBytecode.object },
    };
    const text = JSON.stringify(artifact, null, 1) + '\n';
    const target = path.join(dir, `${name}.json`);
    if (check) {
      const have = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '';
      if (have !== text) stale.push(target);
    } else {
      fs.writeFileSync(target, text);
      console.log(`wrote ${path.relative(root, target)} (${c.evm.deployedBytecode.object.length / 2} bytes deployed)`);
    }
  }
}
if (stale.length) {
  console.error(`artifacts differ from a fresh compile: ${stale.join(', ')}; run ops/contracts.sh`);
  process.exit(1);
}
