"""NEAR transactions: dataclasses, borsh encoding/decoding, signing, hashes.

Action enum order follows nearcore (``Action``): CreateAccount 0, DeployContract 1,
FunctionCall 2, Transfer 3, Stake 4, AddKey 5, DeleteKey 6, DeleteAccount 7, Delegate 8.
A transaction is signed over sha256(borsh(Transaction)); its hash is base58 of that digest;
RPC takes base64 of borsh(SignedTransaction).  A delegate action (NEP-366) is signed over
sha256(u32 LE (2^30 + 366) || borsh(DelegateAction)).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Literal, final, overload

from core.wallet.accounts import validate_account_id
from gateway.wallet.base58 import b58encode
from gateway.wallet.borsh import Reader, Writer
from gateway.wallet.keys import ED25519, SIGNATURE_LEN, KeyPair, PublicKey, verify

NEP366_PREFIX = 2**30 + 366
BLOCK_HASH_LEN = 32


def _write_pk(w: Writer, pk: PublicKey) -> None:
    w.u8(ED25519).fixed(pk.data, 32)


def _read_pk(r: Reader) -> PublicKey:
    if r.u8() != ED25519:
        raise ValueError("only ed25519 keys are supported")
    return PublicKey(r.fixed(32))


def _write_sig(w: Writer, sig: bytes) -> None:
    w.u8(ED25519).fixed(sig, SIGNATURE_LEN)


def _read_sig(r: Reader) -> bytes:
    if r.u8() != ED25519:
        raise ValueError("only ed25519 signatures are supported")
    return r.fixed(SIGNATURE_LEN)


# --- access keys --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FunctionCallPermission:
    receiver_id: str
    method_names: tuple[str, ...] = ()
    allowance: int | None = None  # yoctoNEAR; None = unlimited

    def __post_init__(self) -> None:
        validate_account_id(self.receiver_id)
        object.__setattr__(self, "method_names", tuple(self.method_names))


@dataclass(frozen=True, slots=True)
class FullAccessPermission:
    pass


@dataclass(frozen=True, slots=True)
class AccessKey:
    permission: FunctionCallPermission | FullAccessPermission
    nonce: int = 0

    def encode(self, w: Writer) -> None:
        w.u64(self.nonce)
        p = self.permission
        if isinstance(p, FunctionCallPermission):
            w.u8(0)
            if p.allowance is None:
                w.u8(0)
            else:
                w.u8(1).u128(p.allowance)
            w.string(p.receiver_id)
            w.u32(len(p.method_names))
            for m in p.method_names:
                w.string(m)
        elif isinstance(p, FullAccessPermission):
            w.u8(1)
        else:
            raise TypeError(f"unknown permission {p!r}")

    @classmethod
    def decode(cls, r: Reader) -> AccessKey:
        nonce = r.u64()
        tag = r.u8()
        if tag == 0:
            allowance = r.u128() if r.option() else None
            receiver = r.string()
            methods = tuple(r.string() for _ in range(r.u32()))
            return cls(FunctionCallPermission(receiver, methods, allowance), nonce)
        if tag == 1:
            return cls(FullAccessPermission(), nonce)
        raise ValueError(f"unknown access key permission {tag}")


# --- actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateAccount:
    TAG = 0

    def encode_fields(self, w: Writer) -> None:
        pass


@dataclass(frozen=True, slots=True)
class DeployContract:
    code: bytes
    TAG = 1

    def encode_fields(self, w: Writer) -> None:
        w.bytes(self.code)


@dataclass(frozen=True, slots=True)
class FunctionCall:
    method_name: str
    args: bytes
    gas: int
    deposit: int = 0
    TAG = 2

    def encode_fields(self, w: Writer) -> None:
        w.string(self.method_name).bytes(self.args).u64(self.gas).u128(self.deposit)


@dataclass(frozen=True, slots=True)
class Transfer:
    deposit: int
    TAG = 3

    def encode_fields(self, w: Writer) -> None:
        w.u128(self.deposit)


@dataclass(frozen=True, slots=True)
class Stake:
    stake: int
    public_key: PublicKey
    TAG = 4

    def encode_fields(self, w: Writer) -> None:
        w.u128(self.stake)
        _write_pk(w, self.public_key)


@dataclass(frozen=True, slots=True)
class AddKey:
    public_key: PublicKey
    access_key: AccessKey
    TAG = 5

    def encode_fields(self, w: Writer) -> None:
        _write_pk(w, self.public_key)
        self.access_key.encode(w)


@dataclass(frozen=True, slots=True)
class DeleteKey:
    public_key: PublicKey
    TAG = 6

    def encode_fields(self, w: Writer) -> None:
        _write_pk(w, self.public_key)


@dataclass(frozen=True, slots=True)
class DeleteAccount:
    beneficiary_id: str
    TAG = 7

    def __post_init__(self) -> None:
        validate_account_id(self.beneficiary_id)

    def encode_fields(self, w: Writer) -> None:
        w.string(self.beneficiary_id)


NonDelegateAction = (
    CreateAccount | DeployContract | FunctionCall | Transfer | Stake | AddKey | DeleteKey | DeleteAccount
)


@dataclass(frozen=True, slots=True)
class DelegateAction:
    sender_id: str
    receiver_id: str
    actions: tuple[NonDelegateAction, ...]
    nonce: int
    max_block_height: int
    public_key: PublicKey

    def __post_init__(self) -> None:
        validate_account_id(self.sender_id)
        validate_account_id(self.receiver_id)
        object.__setattr__(self, "actions", tuple(self.actions))
        for a in self.actions:
            if isinstance(a, SignedDelegate):
                raise ValueError("a delegate action cannot contain another delegate action")

    def encode(self, w: Writer) -> None:
        w.string(self.sender_id).string(self.receiver_id)
        _write_actions(w, self.actions)
        w.u64(self.nonce).u64(self.max_block_height)
        _write_pk(w, self.public_key)

    def to_borsh(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.getvalue()

    def signing_hash(self) -> bytes:
        """sha256(u32 LE (2^30 + 366) || borsh(DelegateAction)), per NEP-366/NEP-461."""
        return hashlib.sha256(NEP366_PREFIX.to_bytes(4, "little") + self.to_borsh()).digest()

    def sign(self, key: KeyPair) -> SignedDelegate:
        if key.public_key != self.public_key:
            raise ValueError("the key pair does not match the delegate action's public key")
        return SignedDelegate(self, key.sign(self.signing_hash()))


@final  # analysis dispatches on `type(a) is SignedDelegate`; final lets that narrow the other branch
@dataclass(frozen=True, slots=True)
class SignedDelegate:
    delegate_action: DelegateAction
    signature: bytes
    TAG = 8

    def encode_fields(self, w: Writer) -> None:
        self.delegate_action.encode(w)
        _write_sig(w, self.signature)

    def verify(self) -> bool:
        da = self.delegate_action
        return verify(da.public_key, da.signing_hash(), self.signature)


Action = NonDelegateAction | SignedDelegate
ACTION_TYPES: tuple[type, ...] = (
    CreateAccount,
    DeployContract,
    FunctionCall,
    Transfer,
    Stake,
    AddKey,
    DeleteKey,
    DeleteAccount,
    SignedDelegate,
)


def _write_actions(w: Writer, actions: tuple[Action, ...]) -> None:
    w.u32(len(actions))
    for a in actions:
        if type(a) not in ACTION_TYPES:
            raise TypeError(f"not a NEAR action: {a!r}")
        w.u8(a.TAG)
        a.encode_fields(w)


@overload
def _read_action(r: Reader, *, allow_delegate: Literal[False]) -> NonDelegateAction: ...
@overload
def _read_action(r: Reader, *, allow_delegate: bool = True) -> Action: ...
def _read_action(r: Reader, *, allow_delegate: bool = True) -> Action:
    tag = r.u8()
    if tag == 0:
        return CreateAccount()
    if tag == 1:
        return DeployContract(r.bytes())
    if tag == 2:
        return FunctionCall(r.string(), r.bytes(), r.u64(), r.u128())
    if tag == 3:
        return Transfer(r.u128())
    if tag == 4:
        return Stake(r.u128(), _read_pk(r))
    if tag == 5:
        return AddKey(_read_pk(r), AccessKey.decode(r))
    if tag == 6:
        return DeleteKey(_read_pk(r))
    if tag == 7:
        return DeleteAccount(r.string())
    if tag == 8 and allow_delegate:
        sender, receiver = r.string(), r.string()
        inner = tuple(_read_action(r, allow_delegate=False) for _ in range(r.u32()))
        da = DelegateAction(sender, receiver, inner, r.u64(), r.u64(), _read_pk(r))
        return SignedDelegate(da, _read_sig(r))
    raise ValueError(f"unsupported action tag {tag}")


# --- transactions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transaction:
    signer_id: str
    public_key: PublicKey
    nonce: int
    receiver_id: str
    block_hash: bytes
    actions: tuple[Action, ...] = field(default=())

    def __post_init__(self) -> None:
        validate_account_id(self.signer_id)
        validate_account_id(self.receiver_id)
        if len(self.block_hash) != BLOCK_HASH_LEN:
            raise ValueError("block hash must be 32 bytes")
        object.__setattr__(self, "actions", tuple(self.actions))

    def encode(self, w: Writer) -> None:
        w.string(self.signer_id)
        _write_pk(w, self.public_key)
        w.u64(self.nonce).string(self.receiver_id).fixed(self.block_hash, BLOCK_HASH_LEN)
        _write_actions(w, self.actions)

    def to_borsh(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.getvalue()

    def digest(self) -> bytes:
        """sha256(borsh(Transaction)) — what is signed; base58 of it is the transaction hash."""
        return hashlib.sha256(self.to_borsh()).digest()

    @property
    def hash(self) -> str:
        return b58encode(self.digest())

    def sign(self, key: KeyPair) -> SignedTransaction:
        if key.public_key != self.public_key:
            raise ValueError("the key pair does not match the transaction's public key")
        return SignedTransaction(self, key.sign(self.digest()))

    @classmethod
    def decode(cls, r: Reader) -> Transaction:
        signer = r.string()
        pk = _read_pk(r)
        nonce = r.u64()
        receiver = r.string()
        block_hash = r.fixed(BLOCK_HASH_LEN)
        actions = tuple(_read_action(r) for _ in range(r.u32()))
        return cls(signer, pk, nonce, receiver, block_hash, actions)

    @classmethod
    def from_borsh(cls, data: bytes) -> Transaction:
        r = Reader(data)
        tx = cls.decode(r)
        r.done()
        return tx


@dataclass(frozen=True, slots=True)
class SignedTransaction:
    transaction: Transaction
    signature: bytes

    def to_borsh(self) -> bytes:
        w = Writer()
        self.transaction.encode(w)
        _write_sig(w, self.signature)
        return w.getvalue()

    def to_base64(self) -> str:
        """The ``signed_tx_base64`` parameter of RPC ``send_tx``."""
        return base64.b64encode(self.to_borsh()).decode("ascii")

    @property
    def hash(self) -> str:
        return self.transaction.hash

    def verify(self) -> bool:
        """The signature is valid for the transaction's public key (and every inner delegate's)."""
        tx = self.transaction
        if not verify(tx.public_key, tx.digest(), self.signature):
            return False
        return all(a.verify() for a in tx.actions if isinstance(a, SignedDelegate))

    @classmethod
    def from_borsh(cls, data: bytes) -> SignedTransaction:
        r = Reader(data)
        tx = Transaction.decode(r)
        sig = _read_sig(r)
        r.done()
        return cls(tx, sig)

    @classmethod
    def from_base64(cls, text: str) -> SignedTransaction:
        return cls.from_borsh(base64.b64decode(text, validate=True))
