"""Column layout and known facts of the Criteo Display Advertising Challenge (Kaggle dac) files."""

NUM_INT_FIELDS = 13
NUM_CAT_FIELDS = 26
NUM_FIELDS = NUM_INT_FIELDS + NUM_CAT_FIELDS
INT_NAMES = tuple(f"I{j}" for j in range(1, NUM_INT_FIELDS + 1))
CAT_NAMES = tuple(f"C{j}" for j in range(1, NUM_CAT_FIELDS + 1))
FIELD_NAMES = INT_NAMES + CAT_NAMES
LABEL_NAME = "Label"

# Full Kaggle files (train.txt is in time order: about 7 days, the last day is ~1/7 of rows).
FULL_TRAIN_ROWS = 45_840_617
FULL_TEST_ROWS = 6_042_135
# Leading hex digits of the official files' md5, as quoted from the winners' README
# (only the prefixes are known to this project; a full-size file is checked against them).
FULL_TRAIN_MD5_PREFIX = "4dcfe6c4"
FULL_TEST_MD5_PREFIX = "94ccf278"

# raw.json "source" of the Criteo 1TB Click Logs (day_0 .. day_23, same columns as train.txt).
CRITEO_1TB = "criteo_1tb"

# Kaggle Ids: train 10000000 + row index, test 60000000 + row index.
TRAIN_ID_START = 10_000_000
TEST_ID_START = 60_000_000

# Kaggle CSV headers.
CSV_TRAIN_HEADER = ("Id", LABEL_NAME) + FIELD_NAMES
CSV_TEST_HEADER = ("Id",) + FIELD_NAMES
