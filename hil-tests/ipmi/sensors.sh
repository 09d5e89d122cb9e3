#!/usr/bin/env bash
# The bench BMC's sensors: prints the ipmi_sim emulator commands (ipmi_sim_cmd(5))
# that create them — each a threshold sensor with its readings, thresholds and
# events (sensor_add, sensor_set_threshold, sensor_set_event_support,
# sensor_set_value) and its full sensor record in the main SDR repository
# (main_sdr_add, laid out after IPMI v2.0 table 43-1) — and writes TABLE, one
# line per sensor for set-sensor: NAME|NUMBER|M|B|BEXP|REXP.
#   sensors.sh TABLE >>bmc.emu
# A value is  (M * raw + B * 10^BEXP) * 10^REXP  (linear, unsigned raw byte).
set -euo pipefail
table=${1:?usage: sensors.sh TABLE}
: >"$table"

# sensor NUMBER TYPE UNIT ENTITY M B BEXP REXP READABLE "UNR UC UNC LNR LC LNC" RAW NAME
#   TYPE: sensor type (0x01 temperature, 0x02 voltage, 0x04 fan, 0x08 power supply)
#   UNIT: base unit (1 degrees C, 4 Volts, 6 Watts, 18 RPM)
#   READABLE: the thresholds that exist, bits 5..0 = UNR UC UNC LNR LC LNC
#   thresholds and RAW (the initial reading) as raw bytes
sensor() {
    local num=$1 type=$2 unit=$3 entity=$4 m=$5 b=$6 bexp=$7 rexp=$8 readable=$9
    local thr=${10} raw=${11} name=${12}
    local mask bits="" i
    mask=$((readable))
    for i in 5 4 3 2 1 0; do bits+=$(( (mask >> i) & 1 )); done
    # Threshold events: going high on the upper ones, going low on the lower ones.
    local ev="000101010010101"
    echo "sensor_add 0x20 0 $num $type 0x01"
    # shellcheck disable=SC2086
    echo "sensor_set_threshold 0x20 0 $num settable $bits $thr"
    echo "sensor_set_event_support 0x20 0 $num enable scanning per-state $ev $ev $ev $ev"
    echo "sensor_set_value 0x20 0 $num $raw 0"
    local len=$((43 + ${#name})) idbytes="" c
    for ((i = 0; i < ${#name}; i++)); do
        c=${name:i:1}
        idbytes+=" $(printf '0x%02x' "'$c")"
    done
    local mlo=$((m & 0xff)) mhi=$(( ((m >> 8) & 3) << 6 ))
    local blo=$((b & 0xff)) bhi=$(( ((b >> 8) & 3) << 6 ))
    local exps=$(( ((rexp & 0xf) << 4) | (bexp & 0xf) ))
    # Bytes 1-5: record id (assigned by ipmi_sim), SDR version 0x51, type 0x01, length.
    # 6-8 owner 0x20, LUN 0, number; 9-10 entity id/instance; 11 init (scan, events,
    # thresholds, hysteresis, type; enabled); 12 caps (auto re-arm, thresholds
    # readable+settable); 13-14 type, reading type threshold; 15-18 event masks;
    # 19 readable thresholds; 20 settable; 21-23 units (unsigned, base, no
    # modifier); 24 linear; 25-30 M, tolerance, B, accuracy, direction, exponents;
    # 31 analog flags; 32-36 nominal/normal/max/min (min 0, max 255);
    # 37-42 thresholds UNR UC UNC LNR LC LNC; 43-44 hysteresis; 45-47 reserved/OEM;
    # 48 ID string: 8-bit ASCII + length; then the name.
    # shellcheck disable=SC2086
    echo "main_sdr_add 0x20 0x00 0x00 0x51 0x01 $len" \
        "0x20 0x00 $num $entity 0x01 0x7f 0x48 $type 0x01" \
        "0x00 0x00 0x00 0x00 $readable $readable" \
        "0x00 $unit 0x00 0x00 $mlo $mhi $blo $bhi 0x00 $exps" \
        "0x00 0x00 0x00 0x00 0xff 0x00 $thr 0x00 0x00 0x00 0x00 0x00" \
        "$(printf '0x%02x' $((0xc0 | ${#name})))$idbytes"
    echo "$name|$num|$m|$b|$bexp|$rexp" >>"$table"
}

#      num  type unit entity M  B BEXP REXP readable "UNR UC  UNC LNR LC  LNC" raw name
sensor 0x01 0x01 1    0x37   1  0 0    0    0x3b     "50  45  40  0   5   10"  23  "Inlet Temp"
sensor 0x02 0x01 1    0x03   1  0 0    0    0x38     "100 95  85  0   0   0"   45  "CPU Temp"
sensor 0x03 0x04 18   0x1d   50 0 0    0    0x03     "0   0   0   0   10  20"  120 "Fan 1"
sensor 0x04 0x02 4    0x07   6  0 0    -2   0x1b     "0   220 210 0   180 190" 200 "12V"
sensor 0x05 0x08 6    0x13   4  0 0    0    0x18     "0   200 150 0   0   0"   50  "Pwr Consumption"
