"""The tiny caption tokenizer's vocabulary (tests and first runs): a fixed WordPiece list, so token ids
never change; the tiny text encoder's size and the tokenizer both come from it."""

from __future__ import annotations

from functools import lru_cache

_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_ASCII = "abcdefghijklmnopqrstuvwxyz0123456789"
_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
# Frequent characters of Chinese text and product titles; BERT splits CJK text into characters.
_CJK = (
    "的一是不了人我在有他这中大来上个国和也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发"
    "天如然作方成者多日都三小二无同么经法当起与好看学进种将还分此心前面又定见只主没公从新款手机壳红色黑白蓝"
    "绿黄粉紫灰金银女男士儿童夏季冬秋春装正品包邮厨房卫浴客厅卧室沙发椅桌灯具电视冰箱洗衣空调茶杯碗盘锅牛仔"
    "裤衬衫连裙鞋帽袋箱化妆口香水霜按摩柜床垫被枕毛巾玩宠物食零瓶罐盒木质塑料不锈钢玻璃陶瓷皮革棉麻丝户外运"
    "动健身办公文件笔本耳充线表镜架车载智能家电器套装礼高端简约风格北欧复古创意实时尚加厚防滑保温便携折叠"
)


@lru_cache(maxsize=1)
def tiny_vocab() -> dict[str, int]:
    """The tiny tokenizer's WordPiece vocabulary (fixed order: token ids never change)."""
    tokens = list(_SPECIALS) + list(_ASCII) + ["##" + c for c in _ASCII] + list(_PUNCT)
    tokens += list(dict.fromkeys(_CJK))
    return {t: i for i, t in enumerate(tokens)}


