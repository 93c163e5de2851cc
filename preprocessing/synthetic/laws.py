"""The fitted constants of the synthetic data: what was measured on, or fitted to, the real
Kaggle files. Pure data; `distributions.py` turns the laws into probabilities and inverse CDFs.

A Python module rather than a YAML/JSON file: stage 00's code fingerprint is the import closure of
its entry module (pipeline/code.py), so an edit here makes the stage stale, which a data file read
at run time would not; and the numbers keep their comments and their tuple/None types.
"""

TARGET_CLICK_RATE = 0.2562  # Kaggle train.txt

# Categorical value law, per field: (exponent, offset, head_ranks, tail_scale, support).
# Rank r has mass proportional to the integral over [r, r+1) of (x + offset)^-exponent, times
# tail_scale for r >= head_ranks; ranks run over [0, support). Fitted (least squares on logs) to
# three targets at 45,840,617 rows: the raw distinct count per field (the widely quoted Kaggle
# train.txt counts, less one for the empty value), the count of values seen >= 10 times (the
# per-field sizes of the winners' features after their count filter, less the "less" and empty
# tokens), and the top value's share in the real sample (rows 0-9,999 of train.txt). Small closed
# vocabularies (head = support) only fit the top share. tests/test_synthetic.py recomputes the
# full-scale counts from these laws.
CAT_VALUE_LAWS = {
    "C1": (1.9990, 1.0000, 1456, 0.219, 1460),
    "C2": (1.0417, 1.0000, 554, 9.81e-05, 598),
    "C3": (0.9238, 0.3191, 176371, 0.265, 525425531),
    "C4": (1.0606, 1.0007, 129681, 0.207, 54178502),
    "C5": (2.5817, 1.0000, 305, 1.0, 305),
    "C6": (2.0021, 1.0000, 17, 1.39e-05, 25),
    "C7": (0.6544, 1.0000, 11886, 4.52e-04, 13278),
    "C8": (2.2823, 1.0000, 631, 0.0463, 633),
    "C9": (3.9726, 1.0000, 3, 1.0, 3),
    "C10": (1.2795, 0.5031, 41737, 0.0347, 8470492),
    "C11": (0.7068, 1.0000, 5169, 4.70e-04, 5883),
    "C12": (0.9718, 0.6601, 175444, 0.323, 557370422),
    "C13": (0.6948, 1.0000, 3169, 1.88e-04, 3211),
    "C14": (1.5057, 1.0000, 27, 1.0, 27),
    "C15": (0.7391, 1.0000, 11355, 1.33e-03, 16292),
    "C16": (1.0022, 1.0296, 165600, 0.286, 233626284),
    "C17": (1.5399, 1.0000, 10, 1.0, 10),
    "C18": (0.8868, 1.0000, 4640, 8.50e-04, 5996),
    "C19": (1.9315, 0.6019, 2028, 0.999, 2136),
    "C20": (0.1824, 1.0000, 3, 1.0, 3),
    "C21": (1.0027, 0.9605, 172759, 0.344, 606394102),
    "C22": (1.9877, 1.0000, 17, 1.0, 17),
    "C23": (1.7108, 1.0000, 15, 1.0, 15),
    "C24": (1.0439, 1.0000, 57901, 0.0235, 2534861),
    "C25": (1.4986, 1.0000, 84, 1.11e-04, 105),
    "C26": (1.0500, 1.0000, 44547, 0.0107, 1342633),
}

# Missing values, measured on the real sample. Fields in one group share a uniform draw per row
# and are missing when it falls below their rate, so smaller-rate fields are nested in larger ones.
MISSING_GROUPS = {
    "activity": {"I8": 0.0010, "I7": 0.0492, "I9": 0.0492, "I11": 0.0492, "I5": 0.0494,
                 "I6": 0.2511, "I1": 0.4481, "I10": 0.4481, "I12": 0.7735},
    "I3": {"I3": 0.2037},
    "I4": {"I4": 0.1978, "I13": 0.1978},
    "C3": {name: 0.0357 for name in ("C3", "C4", "C12", "C16", "C21", "C24")},
    "C6": {"C6": 0.1332, "C22": 0.8182},
    "C19": {name: 0.4496 for name in ("C19", "C20", "C25", "C26")},
}
# In the sample, a row missing I8 (the rarest) misses these fields too: a "blank row".
BLANK_ROW_SOURCE = "I8"
BLANK_ROW_FIELDS = ("I3", "I4", "I13", "C19", "C20", "C22", "C25", "C26")

# Integer values, measured on the present values of the real sample: probabilities of the small
# values (INT_SMALL_VALUES) and, for values >= 10, ln(value) at the conditional quantiles
# INT_TAIL_QUANTILES. The tail gets the probability the small values leave.
INT_SMALL_VALUES = tuple(range(-2, 10))
INT_TAIL_QUANTILES = (0, .1, .2, .3, .4, .5, .6, .7, .8, .9, .95, .99, 1)
INT_SMALL_PROBABILITIES = {
    "I1": (0, 0, .4753, .1616, .0893, .0578, .0420, .0268, .0230, .0161, .0136, .0092),
    "I2": (.0006, .0969, .1795, .1574, .0551, .0304, .0189, .0164, .0128, .0119, .0119, .0100),
    "I3": (0, 0, .0080, .1499, .0983, .0784, .0625, .0516, .0403, .0343, .0357, .0257),
    "I4": (0, 0, .0714, .1500, .1239, .0905, .0788, .0578, .0489, .0415, .0358, .0288),
    "I5": (0, 0, .0166, .0195, .0146, 0, .0119, .0087, 0, .0069, .0057, 0),
    "I6": (0, 0, .0629, .0312, .0274, .0248, .0199, .0182, .0200, .0176, .0183, .0116),
    "I7": (0, 0, .2525, .1398, .0892, .0643, .0488, .0418, .0334, .0263, .0221, .0181),
    "I8": (0, 0, .1177, .0846, .0691, .0546, .0503, .0435, .0402, .0408, .0268, .0263),
    "I9": (0, 0, .0318, .0419, .0330, .0285, .0223, .0205, .0197, .0153, .0146, .0144),
    "I10": (0, 0, .5015, .4321, .0558, .0091, .0013, 0, .0002, 0, 0, 0),
    "I11": (0, 0, .2649, .3616, .1345, .0736, .0413, .0280, .0204, .0150, .0099, .0074),
    "I12": (0, 0, .7364, .1479, .0415, .0177, .0119, .0053, .0075, .0062, .0040, .0031),
    "I13": (0, 0, .0616, .1421, .1147, .0850, .0672, .0514, .0451, .0368, .0369, .0269),
}
INT_TAIL_LOG_QUANTILES = {
    "I1": (2.303, 2.303, 2.485, 2.565, 2.708, 2.833, 3.045, 3.258, 3.466, 3.835, 4.152, 4.667,
           5.366),
    "I2": (2.303, 2.639, 3.045, 3.401, 3.761, 4.094, 4.517, 5.030, 5.635, 6.605, 7.285, 8.013,
           9.827),
    "I3": (2.303, 2.398, 2.639, 2.833, 3.045, 3.258, 3.497, 3.784, 4.127, 4.691, 5.192, 6.447,
           11.09),
    "I4": (2.303, 2.398, 2.485, 2.565, 2.708, 2.833, 2.944, 3.135, 3.296, 3.555, 3.714, 4.080,
           5.635),
    "I5": (2.303, 4.205, 5.884, 7.186, 7.495, 8.047, 8.643, 9.126, 9.756, 10.448, 10.999, 12.714,
           14.297),
    "I6": (2.303, 2.773, 3.219, 3.584, 3.951, 4.277, 4.615, 5.017, 5.455, 6.070, 6.568, 7.587,
           9.406),
    "I7": (2.303, 2.398, 2.565, 2.773, 2.944, 3.178, 3.332, 3.611, 4.007, 4.500, 5.037, 6.194,
           7.413),
    "I8": (2.303, 2.398, 2.565, 2.773, 2.944, 3.091, 3.258, 3.434, 3.584, 3.761, 3.850, 3.892,
           6.525),
    "I9": (2.303, 2.773, 3.219, 3.584, 3.912, 4.234, 4.575, 4.934, 5.380, 5.936, 6.406, 7.273,
           8.900),
    "I10": None,  # no value >= 10 in the sample
    "I11": (2.303, 2.303, 2.398, 2.485, 2.595, 2.708, 2.833, 2.996, 3.178, 3.497, 3.794, 4.094,
            4.369),
    "I12": (2.303, 2.303, 2.322, 2.398, 2.518, 2.773, 2.868, 3.045, 3.303, 3.523, 3.664, 4.470,
            4.585),
    "I13": (2.303, 2.398, 2.485, 2.639, 2.773, 2.944, 3.091, 3.296, 3.526, 3.807, 4.060, 4.840,
            6.646),
}
# Each integer takes its quantile from a row-level "activity" draw with this probability (else
# from its own draw), which correlates the count-like fields as in the real data.
INT_ACTIVITY_SHARE = 0.5
