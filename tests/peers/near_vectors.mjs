// Independent NEAR wire-format peer for clawgate's tests: reads a JSON request on stdin, builds and
// signs everything with near-api-js (@near-js/*), and prints the results as JSON on stdout.
// Numbers (nonces, gas, amounts) travel as decimal strings; bytes as hex.
import { createHash } from "node:crypto";
import { KeyPair, PublicKey } from "@near-js/crypto";
import { KeyPairSigner } from "@near-js/signers";
import {
  AccessKey, AccessKeyPermission, FullAccessPermission, FunctionCallPermission,
  actionCreators, buildDelegateAction, createTransaction, encodeTransaction,
} from "@near-js/transactions";
import { baseDecode, baseEncode, formatNearAmount, parseNearAmount } from "@near-js/utils";

const hex = (b) => Buffer.from(b).toString("hex");
const unhex = (s) => new Uint8Array(Buffer.from(s, "hex"));

function accessKey(spec) {
  const permission = spec.permission === "full_access"
    ? new AccessKeyPermission({ fullAccess: new FullAccessPermission() })
    : new AccessKeyPermission({
      functionCall: new FunctionCallPermission({
        allowance: spec.allowance == null ? undefined : BigInt(spec.allowance),
        receiverId: spec.receiver_id,
        methodNames: spec.method_names,
      }),
    });
  return new AccessKey({ nonce: BigInt(spec.nonce), permission });
}

async function action(a) {
  switch (a.type) {
    case "create_account": return actionCreators.createAccount();
    case "deploy_contract": return actionCreators.deployContract(unhex(a.code_hex));
    case "function_call":
      return actionCreators.functionCall(a.method_name, unhex(a.args_hex), BigInt(a.gas), BigInt(a.deposit));
    case "transfer": return actionCreators.transfer(BigInt(a.deposit));
    case "stake": return actionCreators.stake(BigInt(a.stake), PublicKey.fromString(a.public_key));
    case "add_key": return actionCreators.addKey(PublicKey.fromString(a.public_key), accessKey(a.access_key));
    case "delete_key": return actionCreators.deleteKey(PublicKey.fromString(a.public_key));
    case "delete_account": return actionCreators.deleteAccount(a.beneficiary_id);
    case "delegate": {
      const signer = new KeyPairSigner(KeyPair.fromString(a.secret_key));
      const delegateAction = buildDelegateAction({
        senderId: a.sender_id,
        receiverId: a.receiver_id,
        actions: await Promise.all(a.actions.map(action)),
        nonce: BigInt(a.nonce),
        maxBlockHeight: BigInt(a.max_block_height),
        publicKey: await signer.getPublicKey(),
      });
      const [, signedDelegate] = await signer.signDelegateAction(delegateAction);
      return actionCreators.signedDelegate(signedDelegate);
    }
    default: throw new Error(`unknown action type ${a.type}`);
  }
}

async function transaction(c) {
  const signer = new KeyPairSigner(KeyPair.fromString(c.secret_key));
  const publicKey = await signer.getPublicKey();
  const actions = await Promise.all(c.actions.map(action));
  const tx = createTransaction(
    c.signer_id, publicKey, c.receiver_id, BigInt(c.nonce), actions, baseDecode(c.block_hash));
  const unsigned = encodeTransaction(tx);
  const [hash, signed] = await signer.signTransaction(tx);
  const signedBytes = signed.encode();
  return {
    public_key: publicKey.toString(),
    tx_hex: hex(unsigned),
    sha256_hex: createHash("sha256").update(unsigned).digest("hex"),
    hash: baseEncode(hash),
    signature_hex: hex(signed.signature.data),
    signed_hex: hex(signedBytes),
    signed_base64: Buffer.from(signedBytes).toString("base64"),
  };
}

async function nep413(m) {
  const signer = new KeyPairSigner(KeyPair.fromString(m.secret_key));
  const out = await signer.signNep413Message(
    m.message, m.account_id, m.recipient, unhex(m.nonce_hex), m.callback_url ?? undefined);
  return {
    accountId: out.accountId,
    publicKey: out.publicKey.toString(),
    signature: Buffer.from(out.signature).toString("base64"),
  };
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const req = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const out = {
  transactions: await Promise.all((req.transactions ?? []).map(transaction)),
  nep413: await Promise.all((req.nep413 ?? []).map(nep413)),
  keys: (req.keys ?? []).map((s) => KeyPair.fromString(s).getPublicKey().toString()),
  parse_near: (req.parse_near ?? []).map((s) => parseNearAmount(s)),
  format_near: (req.format_near ?? []).map((s) => formatNearAmount(s, 24)),
};
process.stdout.write(JSON.stringify(out));
